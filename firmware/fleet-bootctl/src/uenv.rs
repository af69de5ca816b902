//! The U-Boot environment file as `fw_setenv` (libubootenv) and U-Boot's `env export -c`
//! write it: a little-endian CRC32 of the data area, then `key=value` entries each ended by a
//! NUL, an empty entry closing the list, NUL padding to the environment size (0x4000 here;
//! no redundant copy).
use fleet_core::boot::uboot::Env;

/// The contract's environment size.
pub const DEFAULT_ENV_SIZE: usize = 0x4000;
/// Largest environment size accepted from configuration.
pub const MAX_ENV_SIZE: usize = 0x10_0000;

/// An env image this module cannot read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFormatError {
    #[error("unable to read the env: {len} bytes, expected {size}")]
    WrongSize { len: usize, size: usize },
    #[error(
        "unable to read the env: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    BadCrc { stored: u32, computed: u32 },
    #[error("unable to read the env: entry at offset {offset} is not key=value")]
    Malformed { offset: usize },
    #[error("unable to write the env: {needed} bytes do not fit in {size}")]
    TooLarge { needed: usize, size: usize },
    #[error("unable to write the env: invalid variable {key:?}")]
    InvalidVariable { key: String },
}

/// IEEE 802.3 CRC32 (the one zlib and U-Boot use).
#[must_use]
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The env file's exact bytes (entries sorted by key, as libubootenv writes them).
pub fn encode(env: &Env, size: usize) -> Result<Vec<u8>, EnvFormatError> {
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(&[0; 4]);
    for (key, value) in env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(EnvFormatError::InvalidVariable { key: key.clone() });
        }
        data.extend_from_slice(key.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    // The closing empty entry.
    data.push(0);
    if data.len() > size {
        return Err(EnvFormatError::TooLarge {
            needed: data.len(),
            size,
        });
    }
    data.resize(size, 0);
    let crc = crc32(&data[4..]);
    data[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(data)
}

/// Reads an env image of exactly `size` bytes.
pub fn decode(bytes: &[u8], size: usize) -> Result<Env, EnvFormatError> {
    if bytes.len() != size || size < 5 {
        return Err(EnvFormatError::WrongSize {
            len: bytes.len(),
            size,
        });
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let computed = crc32(&bytes[4..]);
    if stored != computed {
        return Err(EnvFormatError::BadCrc { stored, computed });
    }
    let mut env = Env::new();
    let mut offset = 4;
    while offset < bytes.len() {
        let end = bytes[offset..]
            .iter()
            .position(|b| *b == 0)
            .map_or(bytes.len(), |p| offset + p);
        if end == offset {
            break;
        }
        let entry = std::str::from_utf8(&bytes[offset..end])
            .map_err(|_| EnvFormatError::Malformed { offset })?;
        let (key, value) = entry
            .split_once('=')
            .ok_or(EnvFormatError::Malformed { offset })?;
        if key.is_empty() {
            return Err(EnvFormatError::Malformed { offset });
        }
        env.insert(key.to_owned(), value.to_owned());
        offset = end + 1;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn env_round_trips_and_pads_to_the_size() {
        let e = env(&[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("bootargs", "a=b c"),
        ]);
        let bytes = encode(&e, DEFAULT_ENV_SIZE).expect("encode");
        assert_eq!(bytes.len(), DEFAULT_ENV_SIZE);
        assert_eq!(&bytes[4..17], b"BOOT_A_LEFT=3");
        assert_eq!(decode(&bytes, DEFAULT_ENV_SIZE), Ok(e));
        assert_eq!(
            decode(&encode(&Env::new(), 64).expect("empty"), 64),
            Ok(Env::new())
        );
    }

    #[test]
    fn damaged_or_oversized_envs_are_refused() {
        let e = env(&[("BOOT_ORDER", "A B")]);
        let mut bytes = encode(&e, 64).expect("encode");
        bytes[10] ^= 1;
        assert!(matches!(
            decode(&bytes, 64),
            Err(EnvFormatError::BadCrc { .. })
        ));
        assert!(matches!(
            decode(&bytes[..63], 64),
            Err(EnvFormatError::WrongSize { .. })
        ));
        let big = env(&[("X", &"y".repeat(100))]);
        assert!(matches!(
            encode(&big, 64),
            Err(EnvFormatError::TooLarge { .. })
        ));
        assert!(matches!(
            encode(&env(&[("A=B", "1")]), 64),
            Err(EnvFormatError::InvalidVariable { .. })
        ));
        let mut no_equals = vec![0u8; 64];
        no_equals[4..8].copy_from_slice(b"JUNK");
        let crc = crc32(&no_equals[4..]);
        no_equals[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&no_equals, 64),
            Err(EnvFormatError::Malformed { offset: 4 })
        );
    }
}
