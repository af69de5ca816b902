//! The simulated installer: writes a simulated bundle's payload into the inactive slot's image
//! file and arms that slot for a trial boot.
use std::path::PathBuf;

use fleet_core::ports::{BootControl, InstallProgress, InstallRequest, Installed, Installer};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::boot::SlotImage;
use crate::bundle::{self, MAX_HEADER};
use crate::{SimBootloader, SimError, durable};

/// Bytes copied between two progress reports.
const COPY_BLOCK: usize = 256 * 1024;

/// Installs simulated bundles on the station whose bootloader is `boot`.
#[derive(Debug, Clone)]
pub struct SimInstaller {
    boot: SimBootloader,
    compatible: String,
}

impl SimInstaller {
    #[must_use]
    pub fn new(boot: SimBootloader, compatible: impl Into<String>) -> Self {
        Self {
            boot,
            compatible: compatible.into(),
        }
    }
}

fn rd(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |source| SimError::Read {
        path: path.to_owned(),
        source,
    }
}

fn wr(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |source| SimError::Write {
        path: path.to_owned(),
        source,
    }
}

impl Installer for SimInstaller {
    type Error = SimError;

    async fn install(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> Result<Installed, SimError> {
        let path = request.bundle.to_owned();
        let mut file = tokio::fs::File::open(&path).await.map_err(rd(&path))?;
        let total = file.metadata().await.map_err(rd(&path))?.len();
        let mut head = vec![0u8; MAX_HEADER.min(total as usize)];
        file.read_exact(&mut head).await.map_err(rd(&path))?;
        let header = bundle::parse_header(&path, &head)?;
        if header.compatible != self.compatible {
            return Err(SimError::Incompatible {
                path,
                expected: self.compatible.clone(),
                found: header.compatible,
            });
        }
        let booted = self.boot.status()?.booted;
        let target = request.slot;
        if target != booted.other() {
            return Err(SimError::WrongSlot {
                requested: target,
                booted,
            });
        }
        // The slot being overwritten must never be booted half-written: mark it bad first.
        self.boot.mark_bad(target)?;
        self.boot.forget_image(target)?;
        progress(InstallProgress {
            percent: 0,
            message: format!("writing slot {target}"),
        });

        let img = self.boot.image_path(target);
        let tmp: PathBuf = img.with_extension("img.part");
        let mut out = tokio::fs::File::create(&tmp).await.map_err(wr(&tmp))?;
        let payload_len = total - header.payload_offset as u64;
        let mut hasher = sha2::Sha256::new();
        // The header window may already hold the start of the payload.
        let first = &head[header.payload_offset.min(head.len())..];
        hasher.update(first);
        out.write_all(first).await.map_err(wr(&tmp))?;
        let mut written = first.len() as u64;
        let mut buf = vec![0u8; COPY_BLOCK];
        let mut last_percent = 0u8;
        loop {
            let n = file.read(&mut buf).await.map_err(rd(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await.map_err(wr(&tmp))?;
            written += n as u64;
            let percent = (written * 100 / payload_len.max(1)).min(99) as u8;
            if percent > last_percent {
                last_percent = percent;
                progress(InstallProgress {
                    percent,
                    message: format!("writing slot {target}"),
                });
            }
        }
        out.sync_all().await.map_err(wr(&tmp))?;
        drop(out);
        if written != payload_len {
            return Err(SimError::BadBundle {
                path,
                reason: format!(
                    "payload changed while installing ({written} of {payload_len} bytes)"
                ),
            });
        }
        tokio::fs::rename(&tmp, &img).await.map_err(wr(&img))?;
        let slots_dir = self.boot.root().join("slots");
        durable::sync_dir(&slots_dir).map_err(wr(&slots_dir))?;
        self.boot.write_image_meta(
            target,
            &SlotImage {
                version: header.version.clone(),
                behaviour: header.behaviour,
                payload_sha256: hex::encode(hasher.finalize()),
                size: written,
            },
        )?;
        self.boot.arm_trial(target)?;
        progress(InstallProgress {
            percent: 100,
            message: format!("slot {target} written and armed for a trial boot"),
        });
        tracing::info!(slot = %target, version = %header.version, transaction = request.transaction, "simulated install finished");
        Ok(Installed {
            slot: target,
            version: header.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fleet_core::slot::{Slot, SlotHealth};

    use super::*;
    use crate::Behaviour;

    #[tokio::test]
    async fn install_writes_the_inactive_slot_and_arms_a_trial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = SimBootloader::new(dir.path().join("station"));
        boot.provision(&semver::Version::new(1, 0, 0))
            .expect("provision");
        let bundle_path = dir.path().join("b.bundle");
        let payload = vec![42u8; 600 * 1024];
        bundle::write(
            &bundle_path,
            &semver::Version::new(1, 1, 0),
            "fleet-sim",
            Behaviour::Normal,
            &payload,
        )
        .expect("bundle");
        let inst = SimInstaller::new(boot.clone(), "fleet-sim");
        let seen = Mutex::new(Vec::new());
        let done = inst
            .install(
                InstallRequest {
                    bundle: &bundle_path,
                    slot: Slot::B,
                    transaction: "t1",
                    manifest_hash: None,
                },
                &|p| seen.lock().expect("lock").push(p.percent),
            )
            .await
            .expect("install");
        assert_eq!(done.slot, Slot::B);
        assert_eq!(
            std::fs::read(boot.image_path(Slot::B)).expect("img"),
            payload
        );
        let s = boot.status().expect("status");
        assert_eq!(s.primary, Slot::B);
        assert_eq!(s.slot(Slot::B).health, SlotHealth::Trial);
        let seen = seen.into_inner().expect("lock");
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&100));
    }

    #[tokio::test]
    async fn a_bundle_for_another_station_type_installs_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = SimBootloader::new(dir.path().join("station"));
        boot.provision(&semver::Version::new(1, 0, 0))
            .expect("provision");
        let bundle_path = dir.path().join("b.bundle");
        bundle::write(
            &bundle_path,
            &semver::Version::new(1, 1, 0),
            "other-board",
            Behaviour::Normal,
            b"x",
        )
        .expect("bundle");
        let inst = SimInstaller::new(boot.clone(), "fleet-sim");
        let err = inst
            .install(
                InstallRequest {
                    bundle: &bundle_path,
                    slot: Slot::B,
                    transaction: "t",
                    manifest_hash: None,
                },
                &|_| {},
            )
            .await
            .expect_err("refused");
        assert!(matches!(err, SimError::Incompatible { .. }));
        assert!(boot.image_meta(Slot::B).expect("meta").is_none());
    }

    #[tokio::test]
    async fn a_request_for_the_running_slot_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = SimBootloader::new(dir.path().join("station"));
        boot.provision(&semver::Version::new(1, 0, 0))
            .expect("provision");
        let bundle_path = dir.path().join("b.bundle");
        bundle::write(
            &bundle_path,
            &semver::Version::new(1, 1, 0),
            "fleet-sim",
            Behaviour::Normal,
            b"x",
        )
        .expect("bundle");
        let before = boot.status().expect("status");
        let err = SimInstaller::new(boot.clone(), "fleet-sim")
            .install(
                InstallRequest {
                    bundle: &bundle_path,
                    slot: Slot::A,
                    transaction: "t",
                    manifest_hash: None,
                },
                &|_| {},
            )
            .await
            .expect_err("refused");
        assert!(matches!(
            err,
            SimError::WrongSlot {
                requested: Slot::A,
                booted: Slot::A
            }
        ));
        assert_eq!(boot.status().expect("status"), before);
        assert!(boot.image_meta(Slot::B).expect("meta").is_none());
    }
}
