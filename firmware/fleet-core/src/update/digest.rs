//! Content hashes and key ids as types: lower-case hex on the wire, fixed-size bytes in memory.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A hex string that is not the expected number of lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse {what}: expected {digits} lower-case hex digits")]
pub struct HexError {
    /// What was being parsed (`"sha256 digest"`, `"key id"`).
    pub what: &'static str,
    /// The number of hex digits expected.
    pub digits: usize,
}

fn decode_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HexError> {
    let err = HexError {
        what,
        digits: N * 2,
    };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(err);
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or_else(|| err.clone())?;
        let lo = nibble(pair[1]).ok_or_else(|| err.clone())?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

macro_rules! hex_newtype {
    ($(#[$m:meta])* $name:ident, $n:expr, $what:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name([u8; $n]);

        impl $name {
            /// Wraps raw bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; $n]) -> Self {
                Self(bytes)
            }
            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = HexError;
            /// Parses exactly the lower-case hex form (upper case is refused: one spelling
            /// per value, so topics and ids compare byte for byte).
            fn from_str(s: &str) -> Result<Self, HexError> {
                decode_hex::<$n>(s, $what).map(Self)
            }
        }
        impl TryFrom<String> for $name {
            type Error = HexError;
            fn try_from(s: String) -> Result<Self, HexError> {
                s.parse()
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(f, &self.0)?;
                f.write_str(")")
            }
        }
    };
}

hex_newtype!(
    /// A SHA-256 digest, written as 64 lower-case hex digits.
    Sha256Digest,
    32,
    "sha256 digest"
);

hex_newtype!(
    /// The id of a signing key: the first 8 bytes of SHA-256 over its 32-byte ed25519 public
    /// key, written as 16 lower-case hex digits. Computed by `fleet-proto`.
    KeyId,
    8,
    "key id"
);

hex_newtype!(
    /// An ed25519 public key (the 32-byte compressed point), written as 64 lower-case hex
    /// digits. The core never checks that it is a valid point: `fleet-proto` does before a key
    /// enters a trusted set.
    PublicKey,
    32,
    "public key"
);

impl PublicKey {
    /// This key's [`KeyId`]: the first 8 bytes of SHA-256 over the 32 key bytes.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId::from_bytes(id)
    }
}

/// The id of a bundle: the SHA-256 of the whole bundle file. Being the content hash, it is also
/// what the station checks the assembled file against before anything is installed.
pub type BundleId = Sha256Digest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_their_hex_form() {
        let d = Sha256Digest::from_bytes([0xab; 32]);
        let s = d.to_string();
        assert_eq!(s, "ab".repeat(32));
        assert_eq!(s.parse::<Sha256Digest>(), Ok(d));
        let k = KeyId::from_bytes([1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(k.to_string(), "01020304050607ff");
        assert_eq!("01020304050607ff".parse::<KeyId>(), Ok(k));
    }

    #[test]
    fn hex_with_wrong_length_case_or_characters_is_refused() {
        for bad in [
            "",
            "ab",
            &"AB".repeat(32),
            &"ab".repeat(33),
            &format!("{}g", "a".repeat(63)),
            &format!("{}/", "a".repeat(63)),
            &format!("{}é", "a".repeat(62)),
        ] {
            assert!(
                bad.parse::<Sha256Digest>().is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!("0102030405060".parse::<KeyId>().is_err());
    }
}
