//! The daemons' configuration files (`/etc/fleet/*.toml`): fleet-updated, fleet-recorderd,
//! fleet-retentiond, fleet-bootctl and fleet-uploaderd. The first byte picks the parser.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = Path::new("/etc/fleet/fuzz.toml");
    match which % 5 {
        0 => {
            let _ = fleet_updated::Config::parse(path, text).map_err(|e| e.to_string());
        }
        1 => {
            let limits = fleet_recorderd::config::Limits::default();
            let _ = fleet_recorderd::config::Config::parse(text, path, &limits)
                .map_err(|e| e.to_string());
        }
        2 => {
            let _ = fleet_retentiond::config::parse(text).map_err(|e| format!("{e:?}"));
        }
        3 => {
            let _ = fleet_bootctl::Config::parse(text, path).map_err(|e| e.to_string());
        }
        _ => {
            let _ = fleet_uploaderd::config::parse(text).map_err(|e| format!("{e:?}"));
        }
    }
});
