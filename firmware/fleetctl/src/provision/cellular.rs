//! The cellular modem's bearer settings (`network/cellular.conf`), read on the station by
//! `fleet-cellular` (meta-fleet's fleet-network recipe), which hands them to ModemManager as
//! `mmcli --simple-connect` properties (docs/adr/0009-network.md).
//!
//! The file is `key=value` lines, `#` comments, no quoting: `apn` (required), `user`, `password`,
//! `pin`. Values are restricted so that they pass through `--simple-connect`'s comma-separated
//! list unchanged: no commas, quotes, backslashes or white space.

/// Where the file is in the folder (and under `<data>/fleet/identity/`).
pub const FILE: &str = "network/cellular.conf";

/// A bearer: APN and, where the operator needs them, credentials and the SIM's PIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cellular {
    pub apn: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub pin: Option<String>,
}

fn check_apn(apn: &str) -> Result<(), String> {
    // 3GPP TS 23.003: labels of letters, digits and hyphens separated by dots, at most 100.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if apn.is_empty() || apn.len() > 100 || !apn.split('.').all(label_ok) {
        return Err(format!(
            "APN {apn:?}: give 1 to 100 characters, letters, digits, '-' and '_' in labels \
             separated by '.' (as the operator publishes it)"
        ));
    }
    Ok(())
}

fn check_word(what: &str, v: &str) -> Result<(), String> {
    let ok = |c: char| (('!'..='~').contains(&c)) && !matches!(c, ',' | '"' | '\'' | '\\');
    if v.is_empty() || v.len() > 64 || !v.chars().all(ok) {
        return Err(format!(
            "the cellular {what} must be 1 to 64 printable ASCII characters without white space, \
             ',', quotes or '\\' (ModemManager's connect properties are a comma-separated list)"
        ));
    }
    Ok(())
}

fn check_pin(pin: &str) -> Result<(), String> {
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the SIM PIN must be 4 to 8 digits".into());
    }
    Ok(())
}

impl Cellular {
    /// Checks every value.
    ///
    /// # Errors
    /// The first value the station's script would refuse, named.
    pub fn validate(&self) -> Result<(), String> {
        check_apn(&self.apn)?;
        if let Some(u) = &self.user {
            check_word("user name", u)?;
        }
        if let Some(p) = &self.password {
            check_word("password", p)?;
        }
        if self.password.is_some() && self.user.is_none() {
            return Err("a cellular password needs its user name (--cellular-user)".into());
        }
        if let Some(p) = &self.pin {
            check_pin(p)?;
        }
        Ok(())
    }

    /// The file's text.
    ///
    /// # Errors
    /// As [`Cellular::validate`].
    pub fn to_file(&self) -> Result<String, String> {
        self.validate()?;
        let mut out = String::from(
            "# Written by fleetctl provision: the station's cellular bearer, read by fleet-cellular\n\
             # (docs/adr/0009-network.md). key=value, no quoting.\n",
        );
        out.push_str(&format!("apn={}\n", self.apn));
        for (k, v) in [
            ("user", &self.user),
            ("password", &self.password),
            ("pin", &self.pin),
        ] {
            if let Some(v) = v {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
        Ok(out)
    }

    /// Reads the file as the station's script does.
    ///
    /// # Errors
    /// An unknown or repeated key, a line that is not `key=value`, a missing APN, an invalid value.
    pub fn parse_file(text: &str) -> Result<Self, String> {
        let mut c = Self::default();
        let mut apn = None;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {}: not key=value", i + 1));
            };
            let slot = match k {
                "apn" => &mut apn,
                "user" => &mut c.user,
                "password" => &mut c.password,
                "pin" => &mut c.pin,
                other => return Err(format!("line {}: unknown key {other:?}", i + 1)),
            };
            if slot.replace(v.to_owned()).is_some() {
                return Err(format!("line {}: {k} given twice", i + 1));
            }
        }
        c.apn = apn.ok_or("no apn= line")?;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bearer_written_is_read_back_the_same() {
        let c = Cellular {
            apn: "iot.1nce.net".into(),
            user: Some("fleet".into()),
            password: Some("s3cret=1".into()),
            pin: Some("1234".into()),
        };
        assert_eq!(Cellular::parse_file(&c.to_file().unwrap()).unwrap(), c);
        let bare = Cellular {
            apn: "internet".into(),
            ..Cellular::default()
        };
        assert_eq!(
            Cellular::parse_file(&bare.to_file().unwrap()).unwrap(),
            bare
        );
    }

    #[test]
    fn values_that_would_break_the_connect_properties_are_refused() {
        let base = Cellular {
            apn: "internet".into(),
            ..Cellular::default()
        };
        for (bad, needle) in [
            (
                Cellular {
                    apn: "inter net".into(),
                    ..base.clone()
                },
                "APN",
            ),
            (
                Cellular {
                    apn: "a..b".into(),
                    ..base.clone()
                },
                "APN",
            ),
            (
                Cellular {
                    user: Some("u".into()),
                    password: Some("p,ip-type=ipv6".into()),
                    ..base.clone()
                },
                "password",
            ),
            (
                Cellular {
                    password: Some("p".into()),
                    ..base.clone()
                },
                "needs its user",
            ),
            (
                Cellular {
                    pin: Some("12a4".into()),
                    ..base.clone()
                },
                "PIN",
            ),
        ] {
            let e = bad.to_file().unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        for (text, needle) in [
            ("user=x\n", "no apn"),
            ("apn=a\napn=b\n", "twice"),
            ("apn=a\nroaming=yes\n", "unknown key"),
            ("apn\n", "not key=value"),
        ] {
            let e = Cellular::parse_file(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
