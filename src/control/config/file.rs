//! Reading the file and its TOML into raw structs; a TOML error names its key in the file's terms.
use super::{invalid, ConfigError, MAX_CONFIG_BYTES};
use serde::de::{value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) control_socket: Option<String>,
    #[serde(deserialize_with = "table")]
    pub(super) node: RawNode,
    #[serde(default, deserialize_with = "some_table")]
    pub(super) vxlan: Option<RawVxlan>,
    #[serde(default, deserialize_with = "some_table")]
    pub(super) ipip: Option<RawIpip>,
    #[serde(default, deserialize_with = "tables")]
    pub(super) peer: Vec<RawPeer>,
    #[serde(default, deserialize_with = "some_table")]
    pub(super) etcd: Option<RawEtcd>,
}

/// A section that must be a TOML table. Serde's derived structs also take an array of values in
/// field order (`node = ["192.0.2.1", "10.244.1.0/24"]`), which no one means to write and which
/// would slip extra values past the unknown-key check.
struct Table<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMap<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMap<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMap(PhantomData)).map(Table)
    }
}

fn table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Table::deserialize(d).map(|t| t.0)
}

fn some_table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    table(d).map(Some)
}

fn tables<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Table<T>>::deserialize(d).map(|v| v.into_iter().map(|t| t.0).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub(super) endpoints: Vec<String>,
    pub(super) prefix: Option<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) subnet_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) public_ip: String,
    pub(super) subnet: Option<String>,
    pub(super) backend: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVxlan {
    pub(super) device: Option<String>,
    pub(super) vni: Option<i64>,
    pub(super) port: Option<i64>,
    pub(super) mac: Option<String>,
    pub(super) mtu: Option<i64>,
    pub(super) direct_routing: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpip {
    pub(super) device: Option<String>,
    pub(super) mtu: Option<i64>,
    pub(super) ttl: Option<i64>,
    pub(super) direct_routing: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) public_ip: String,
    pub(super) subnet: String,
    pub(super) vtep_mac: Option<String>,
}

/// Parses the TOML into the raw structs; an error names the key it is about, as validation does.
pub(super) fn deserialize(text: &str) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let at = e.inner().span().map(|s| line_column(text, s.start)).unwrap_or_default();
        let message = e.inner().message().replace('\n', "; ");
        let assigned = || e.inner().span().and_then(|s| key_assigned_at(text, s.start));
        match key_and_problem(&e.path().to_string(), &message) {
            Some((key, problem)) => invalid(key, format!("{problem}{at}")),
            None => match assigned() {
                Some(key) => invalid(key, format!("{message}{at}")),
                None => ConfigError::Syntax { path: PathBuf::new(), message: format!("{message}{at}") },
            },
        }
    })
}

/// Serde's messages say `missing field \`subnet\``, `invalid type: string "x", expected i64`: the
/// key goes in front, the problem is put in the file's terms. `None`: a TOML syntax error, which
/// belongs to no key.
pub(super) fn key_and_problem(path: &str, message: &str) -> Option<(String, String)> {
    let path = if path == "." { "" } else { path };
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    if let Some(name) = backquoted_after(message, "missing field ") {
        return Some((join(name), "missing".into()));
    }
    if let Some(name) = backquoted_after(message, "unknown field ") {
        let known = message.split_once(", expected ").map(|(_, e)| e.strip_prefix("one of ").unwrap_or(e).replace('`', ""));
        let expected = known.map(|k| format!(" (known keys here: {k})")).unwrap_or_default();
        // The path may already end at the unknown key (a whole segment, not just its tail).
        let at_key = path == name || path.ends_with(&format!(".{name}"));
        let mut key = if at_key { path.to_string() } else { join(name) };
        if name.is_empty() {
            // `'' = 0`: TOML allows an empty quoted key; name it the way the file spells it.
            key.push_str(if key.is_empty() || key.ends_with('.') { "\"\"" } else { ".\"\"" });
        }
        return Some((key, format!("unknown key{expected}")));
    }
    if path.is_empty() {
        return None;
    }
    if let Some((found, expected)) = message.strip_prefix("invalid type: ").and_then(|m| m.split_once(", expected ")) {
        return Some((path.to_string(), format!("expected {}, found {}", toml_kind(expected), toml_kind(found))));
    }
    Some((path.to_string(), message.to_string()))
}

pub(super) fn backquoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.strip_prefix('`')?.split('`').next()
}

/// A serde type (`i64`, `a boolean`, `struct RawNode`) or value (`string "x"`, `integer \`5\``) as
/// the kind of TOML value it is.
pub(super) fn toml_kind(serde: &str) -> &str {
    let word = serde.strip_prefix("a ").or_else(|| serde.strip_prefix("an ")).unwrap_or(serde);
    match word.split(' ').next().unwrap_or(word) {
        "string" => "a string",
        "boolean" => "a boolean",
        "i64" | "integer" => "an integer",
        "floating" => "a float",
        "sequence" => "an array",
        "map" | "struct" => "a table",
        _ => serde,
    }
}

/// The key that the line holding byte `offset` assigns, as `vxlan.port` or `peer[1].subnet`, when
/// it is a plain `key = value` line: a TOML syntax error belongs to no key as serde sees it, but a
/// number too large for 64 bits, say, is about the key it is assigned to. Table headers are
/// followed line by line; anything fancier (dotted keys, inline tables) gets `None`.
pub(super) fn key_assigned_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let (name, _) = text[start..].lines().next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let (mut table, mut peers) = (String::new(), 0);
    for line in text[..start].lines().map(str::trim) {
        if let Some((t, _)) = line.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            table = if t.trim() == "peer" { format!("peer[{peers}]") } else { t.trim().to_string() };
            peers += usize::from(t.trim() == "peer");
        } else if let Some((t, _)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = t.trim().to_string();
        }
    }
    Some(if table.is_empty() { name.to_string() } else { format!("{table}.{name}") })
}

/// ` (line L, column C)` for a byte offset into `text`.
pub(super) fn line_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {column})")
}

/// Reads a config file, refusing what is not a regular file (`/dev/zero`, a FIFO, a directory)
/// and anything over [`MAX_CONFIG_BYTES`]: either would hang `vtepd check` or eat memory.
pub(super) fn read_config(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |source| ConfigError::Read { path: path.into(), source };
    // Non-blocking, so opening a FIFO with no writer returns at once instead of waiting for one;
    // it changes nothing for a regular file.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile { path: path.into(), what: file_kind(&meta.file_type()) });
    }
    let too_big = || ConfigError::TooBig { path: path.into() };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    // Bounded even if the file grows after the size check.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

pub(super) fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}
