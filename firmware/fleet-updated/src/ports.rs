//! The ports the daemon drives, and the health-check port that lives here until `fleet-core`
//! has one. A leaf module: the daemon, the adapters and the health checks all name it, and it
//! names none of them.
use std::future::Future;
use std::sync::Arc;

use fleet_core::health::gate::Verdict;
use fleet_core::slot::Slot;

/// The health checks a trial slot must pass before it is committed. (Not a `fleet-core` port
/// yet; see the crate docs.) The verdict is `fleet_core::health::gate`'s: healthy, unhealthy
/// (naming the check), or none because the system is going down.
pub trait HealthCheck: Send + Sync + 'static {
    fn check(&self, booted: Slot) -> impl Future<Output = Verdict> + Send;

    /// The daemon's MQTT session came up (`true`) or went down; the broker check reads it.
    fn mqtt_connected(&self, connected: bool) {
        let _ = connected;
    }
}

/// The ports the daemon drives.
#[derive(Debug)]
pub struct Deps<B, I, H> {
    pub boot: Arc<B>,
    pub installer: Arc<I>,
    pub health: Arc<H>,
}

impl<B, I, H> Clone for Deps<B, I, H> {
    fn clone(&self) -> Self {
        Self {
            boot: self.boot.clone(),
            installer: self.installer.clone(),
            health: self.health.clone(),
        }
    }
}
