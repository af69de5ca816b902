//! The pushed layer on disk: `<layer-dir>/<daemon>.toml`, the TOML form of
//! `fleet_core::config_push::apply_push`'s flat map (dotted keys become tables).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleet_core::config_push::Value;
use toml::Table;

/// Why a layer file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LayerFileError {
    #[error("unable to read pushed layer {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse pushed layer {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("unable to write pushed layer {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: fleet_durable::Error,
    },
    #[error("unable to remove pushed layer {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Largest pushed layer read (the daemons read at most 256 KiB per layer).
const MAX_LAYER_BYTES: u64 = 256 << 10;

/// The file's bytes, `None` when there is none.
pub fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, LayerFileError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayerFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    f.take(MAX_LAYER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LayerFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_LAYER_BYTES {
        return Err(LayerFileError::Parse {
            path: path.to_owned(),
            detail: format!("larger than {MAX_LAYER_BYTES} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// The flat map of a pushed layer's text (dotted keys of its leaves).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Value>, LayerFileError> {
    let bad = |detail: String| LayerFileError::Parse {
        path: path.to_owned(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    let table: Table = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out).map_err(bad)?;
    Ok(out)
}

fn flatten(prefix: &str, table: &Table, out: &mut BTreeMap<String, Value>) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::Table(t) => {
                flatten(&key, t, out)?;
                continue;
            }
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Integer(i) => Value::Integer(*i),
            toml::Value::Float(f) => Value::Float(*f),
            toml::Value::String(s) => Value::Text(s.clone()),
            toml::Value::Array(items) => Value::TextList(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{key}: only lists of text are pushed"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Datetime(_) => return Err(format!("{key}: a date is never pushed")),
        };
        out.insert(key, value);
    }
    Ok(())
}

/// The TOML text of a flat map: `position.lat = 1.5` becomes `[position]` / `lat = 1.5`.
#[must_use]
pub fn render(layer: &BTreeMap<String, Value>) -> String {
    let mut table = Table::new();
    for (key, value) in layer {
        let v = match value {
            Value::Bool(b) => toml::Value::Boolean(*b),
            Value::Integer(i) => toml::Value::Integer(*i),
            Value::Float(f) => toml::Value::Float(*f),
            Value::Text(s) => toml::Value::String(s.clone()),
            Value::TextList(l) => {
                toml::Value::Array(l.iter().cloned().map(toml::Value::String).collect())
            }
        };
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut cur = &mut table;
        for p in parts {
            let entry = cur
                .entry(p.to_owned())
                .or_insert_with(|| toml::Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(Table::new());
            }
            cur = entry.as_table_mut().expect("made a table just above");
        }
        cur.insert(leaf.to_owned(), v);
    }
    format!(
        "# Written by fleet-updated from signed configuration pushes (ADR 0011). Do not edit:\n\
         # the next push replaces it; `fleet reset` removes it.\n{}",
        toml::to_string(&table).unwrap_or_default()
    )
}

/// Writes `bytes` at `path` durably, readable by the daemons (group fleet-data): 0640.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), LayerFileError> {
    fleet_durable::WriteOptions::new()
        .mode(0o640)
        .write(path, bytes)
        .map_err(|source| LayerFileError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Removes `path` durably (absent is fine).
pub fn remove(path: &Path) -> Result<(), LayerFileError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LayerFileError::Remove {
                path: path.to_owned(),
                source,
            });
        }
    }
    if let Some(dir) = path.parent() {
        fleet_durable::sync_dir(dir).map_err(|source| LayerFileError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_reads_back_as_the_map_it_was_rendered_from() {
        let layer: BTreeMap<String, Value> = [
            ("position.lat".to_owned(), Value::Float(52.5)),
            ("profiles.bats.gain-db".to_owned(), Value::Integer(12)),
            ("utc-offset".to_owned(), Value::Text("+01:00".into())),
            (
                "schedule.windows".to_owned(),
                Value::TextList(vec!["22:00-06:00".into()]),
            ),
            ("policy.uploader".to_owned(), Value::Bool(true)),
        ]
        .into();
        let text = render(&layer);
        assert!(text.contains("[position]"), "{text}");
        assert_eq!(
            parse(Path::new("x.toml"), text.as_bytes()).expect("parses"),
            layer
        );
    }

    #[test]
    fn a_layer_with_a_date_or_a_list_of_numbers_is_not_a_pushed_layer() {
        for text in ["a = 1979-05-27", "a = [1, 2]", "a = "] {
            assert!(
                parse(Path::new("x.toml"), text.as_bytes()).is_err(),
                "{text}"
            );
        }
    }
}
