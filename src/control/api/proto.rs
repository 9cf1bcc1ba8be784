//! The control socket's protocol: one JSON object per line each way.
//!
//! A request names its command in `cmd` and carries only the fields that command takes:
//! `{"cmd":"fdb_add","mac":"02:00:00:00:00:09","dst":"192.0.2.2"}`. The parser is strict (unknown
//! commands and fields are refused, not ignored) and bounded (a request longer than
//! [`MAX_REQUEST`] is refused before it is parsed), and it never panics: it is what the
//! `control_request` fuzz target runs. Every error names the field and the problem, because the
//! person reading it typed that field.
//!
//! A response is `{"ok":{"<kind>":...}}` or `{"error":"..."}`; the CLI prints the `ok` body as is
//! with `--json` and formats it for humans otherwise ([`super::show`]).
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Longer than any request can legitimately be (the longest is ~80 bytes); the server reads at
/// most this much of a line.
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    FdbShow,
    FdbAdd { mac: MacAddr, dst: Ipv4Addr },
    FdbDel { mac: MacAddr },
    NeighShow,
    NeighAdd { ip: Ipv4Addr, mac: MacAddr },
    NeighDel { ip: Ipv4Addr },
    RouteShow,
    Peers,
    Stats,
    Leases,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("request is {len} bytes; the limit is {MAX_REQUEST}")]
    TooLong { len: usize },
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("request is not a JSON object with a \"cmd\" field: {0}")]
    Json(String),
    #[error("unknown command '{0}' (known: fdb_show, fdb_add, fdb_del, neigh_show, neigh_add, neigh_del, route_show, peers, stats, leases)")]
    UnknownCommand(String),
    #[error("{cmd}: missing field \"{field}\"")]
    Missing { cmd: &'static str, field: &'static str },
    #[error("{cmd}: field \"{field}\" is not used by this command")]
    Unexpected { cmd: &'static str, field: &'static str },
    #[error("field \"{field}\": {problem}")]
    Invalid { field: &'static str, problem: String },
}

/// The request as it is on the wire, before its fields are checked.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst: Option<String>,
}

/// Parses one request line (a trailing newline is allowed).
pub fn parse_request(line: &[u8]) -> Result<Request, ProtoError> {
    if line.len() > MAX_REQUEST {
        return Err(ProtoError::TooLong { len: line.len() });
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtoError::NotUtf8)?;
    let raw: Raw = serde_json::from_str(text.trim_end()).map_err(|e| ProtoError::Json(clip(&e.to_string())))?;
    let (cmd, takes) = command(&raw.cmd)?;
    for (field, present) in [("mac", raw.mac.is_some()), ("ip", raw.ip.is_some()), ("dst", raw.dst.is_some())] {
        if present && !takes.contains(&field) {
            return Err(ProtoError::Unexpected { cmd, field });
        }
    }
    let mac = |f: &Option<String>| field(cmd, "mac", f).and_then(|s| unicast_mac("mac", s));
    let ip = |name: &'static str, f: &Option<String>| field(cmd, name, f).and_then(|s| unicast_ip(name, s));
    Ok(match cmd {
        "fdb_show" => Request::FdbShow,
        "fdb_add" => Request::FdbAdd { mac: mac(&raw.mac)?, dst: ip("dst", &raw.dst)? },
        "fdb_del" => Request::FdbDel { mac: mac(&raw.mac)? },
        "neigh_show" => Request::NeighShow,
        "neigh_add" => Request::NeighAdd { ip: ip("ip", &raw.ip)?, mac: mac(&raw.mac)? },
        "neigh_del" => Request::NeighDel { ip: ip("ip", &raw.ip)? },
        "route_show" => Request::RouteShow,
        "peers" => Request::Peers,
        "stats" => Request::Stats,
        _ => Request::Leases,
    })
}

/// serde_json quotes what it did not expect (an unknown field's whole name, say): cut it short, so
/// an error line never echoes a large part of the request back. (Found by the control_request fuzzer.)
fn clip(msg: &str) -> String {
    const MAX: usize = 200;
    if msg.len() <= MAX {
        return msg.to_string();
    }
    let cut = (0..=MAX).rev().find(|i| msg.is_char_boundary(*i)).unwrap_or(0);
    format!("{}...", &msg[..cut])
}

/// The command's canonical name and the fields it takes.
fn command(name: &str) -> Result<(&'static str, &'static [&'static str]), ProtoError> {
    const COMMANDS: &[(&str, &[&str])] = &[
        ("fdb_show", &[]),
        ("fdb_add", &["mac", "dst"]),
        ("fdb_del", &["mac"]),
        ("neigh_show", &[]),
        ("neigh_add", &["ip", "mac"]),
        ("neigh_del", &["ip"]),
        ("route_show", &[]),
        ("peers", &[]),
        ("stats", &[]),
        ("leases", &[]),
    ];
    COMMANDS.iter().find(|(n, _)| *n == name).copied().ok_or_else(|| {
        // Echo at most a short prefix: the name came from whoever is on the other end.
        ProtoError::UnknownCommand(name.chars().take(32).collect())
    })
}

fn field<'a>(cmd: &'static str, name: &'static str, f: &'a Option<String>) -> Result<&'a str, ProtoError> {
    f.as_deref().ok_or(ProtoError::Missing { cmd, field: name })
}

/// A MAC an FDB or neighbour entry may hold: the config file's rule (a multicast MAC is never a
/// VTEP or a neighbour).
pub fn unicast_mac(field: &'static str, s: &str) -> Result<MacAddr, ProtoError> {
    crate::control::config::parse_unicast_mac(s).map_err(|problem| ProtoError::Invalid { field, problem })
}

/// An IPv4 address a host or pod can have: the config file's rule (not in 0/8, 127/8, 224/4, 240/4).
pub fn unicast_ip(field: &'static str, s: &str) -> Result<Ipv4Addr, ProtoError> {
    crate::control::config::parse_unicast_ip(s).map_err(|problem| ProtoError::Invalid { field, problem })
}

impl Request {
    /// The line the client sends (without the newline).
    pub fn to_line(&self) -> String {
        let (cmd, mac, ip, dst) = match self {
            Request::FdbShow => ("fdb_show", None, None, None),
            Request::FdbAdd { mac, dst } => ("fdb_add", Some(*mac), None, Some(*dst)),
            Request::FdbDel { mac } => ("fdb_del", Some(*mac), None, None),
            Request::NeighShow => ("neigh_show", None, None, None),
            Request::NeighAdd { ip, mac } => ("neigh_add", Some(*mac), Some(*ip), None),
            Request::NeighDel { ip } => ("neigh_del", None, Some(*ip), None),
            Request::RouteShow => ("route_show", None, None, None),
            Request::Peers => ("peers", None, None, None),
            Request::Stats => ("stats", None, None, None),
            Request::Leases => ("leases", None, None, None),
        };
        let raw = Raw {
            cmd: cmd.into(),
            mac: mac.map(|m| m.to_string()),
            ip: ip.map(|i| i.to_string()),
            dst: dst.map(|i| i.to_string()),
        };
        // A struct of strings always serialises.
        serde_json::to_string(&raw).unwrap_or_default()
    }
}

/// Where a table entry came from: a peer (config file or datastore) or `vtepd fdb|neigh add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Peer,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub dst: Ipv4Addr,
    pub dev: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighRow {
    pub ip: Ipv4Addr,
    pub lladdr: String,
    pub dev: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    pub dev: String,
    pub onlink: bool,
    /// Whether the kernel has it now (vtepd repairs a lost route within 5 s); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_kernel: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// "vxlan", "ipip", "direct" (routed without encapsulation: host-gw or direct routing).
    pub mode: String,
    pub vtep_mac: Option<String>,
    /// Something valid arrived within [`REACHABLE_WITHIN`] seconds; `None` when it cannot be known
    /// (a directly routed peer's packets never pass through vtepd).
    pub reachable: Option<bool>,
    /// Seconds since the last valid packet; `None`: nothing yet, or not observable.
    pub last_heard_secs: Option<u64>,
    /// Why a wanted peer is not installed (its last attempt's error; retried every 5 s); absent
    /// for an installed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_installed: Option<String>,
}

/// A peer heard from within this many seconds counts as reachable; flannel and Calico peers that
/// carry any traffic at all (ARP refreshes, TCP keepalives) speak at least this often.
pub const REACHABLE_WITHIN: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersReply {
    pub backend: String,
    pub peers: Vec<PeerRow>,
    /// The datastore's state line, in etcd mode.
    pub datastore: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Every counter, summed over the workers, in a fixed order.
    pub counters: Vec<(String, u64)>,
    /// Entries per table: fdb, neigh, peers, routes.
    pub tables: Vec<(String, u64)>,
    pub datastore: Option<String>,
    /// In etcd mode, whether etcd answered the last time it was asked.
    #[serde(default)]
    pub datastore_reachable: Option<bool>,
    /// Each worker's packets, in worker order: how evenly the flows spread over them.
    #[serde(default)]
    pub workers: Vec<WorkerLoad>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLoad {
    pub rx_packets: u64,
    pub tx_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseJson {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub backend: String,
    pub vtep_mac: Option<String>,
    /// `None` for a reservation (no expiry).
    pub expires_in_secs: Option<u64>,
    pub own: bool,
}

/// A successful answer, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Fdb(Vec<FdbRow>),
    Neigh(Vec<NeighRow>),
    Routes(Vec<RouteRow>),
    Peers(PeersReply),
    Stats(StatsReply),
    Leases(Vec<LeaseJson>),
    /// A change was made; says what.
    Done(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(String),
}

impl Response {
    /// Parses a response line (what the client reads).
    pub fn from_line(line: &str) -> Result<Response, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    pub fn to_line(&self) -> String {
        // Every type in a response serialises (strings, numbers, addresses); the fallback is
        // still a well-formed error line.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"cannot encode response: {e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_request(line.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn every_request_round_trips() {
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let ip = Ipv4Addr::new(10, 244, 9, 0);
        let dst = Ipv4Addr::new(192, 0, 2, 2);
        let all = [
            Request::FdbShow,
            Request::FdbAdd { mac, dst },
            Request::FdbDel { mac },
            Request::NeighShow,
            Request::NeighAdd { ip, mac },
            Request::NeighDel { ip },
            Request::RouteShow,
            Request::Peers,
            Request::Stats,
            Request::Leases,
        ];
        for r in all {
            let line = r.to_line() + "\n";
            assert_eq!(parse_request(line.as_bytes()), Ok(r.clone()), "{line}");
        }
    }

    #[test]
    fn fixed_line_parses() {
        let r = parse_request(br#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","dst":"192.0.2.2"}"#);
        assert_eq!(r, Ok(Request::FdbAdd { mac: MacAddr([2, 0, 0, 0, 0, 9]), dst: Ipv4Addr::new(192, 0, 2, 2) }));
    }

    #[test]
    fn errors_name_the_field_and_problem() {
        assert_eq!(err(r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:zz","dst":"192.0.2.2"}"#),
            "field \"mac\": '02:00:00:00:00:zz' is not a MAC address (like 02:00:00:00:00:09)");
        assert_eq!(err(r#"{"cmd":"fdb_add","mac":"01:00:5e:00:00:01","dst":"192.0.2.2"}"#),
            "field \"mac\": 01:00:5e:00:00:01 is a multicast address (I/G bit set), not a unicast MAC");
        assert_eq!(err(r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09"}"#), "fdb_add: missing field \"dst\"");
        assert_eq!(err(r#"{"cmd":"neigh_del","ip":"10.244.300.1"}"#), "field \"ip\": '10.244.300.1' is not an IPv4 address");
        assert_eq!(err(r#"{"cmd":"neigh_del","ip":"224.0.0.1"}"#), "field \"ip\": 224.0.0.1 is not a unicast host address (it is in 224.0.0.0/4 (multicast))");
        assert!(err(r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","dst":"127.0.0.1"}"#).contains("127.0.0.0/8 (loopback)"));
        assert_eq!(err(r#"{"cmd":"stats","mac":"02:00:00:00:00:09"}"#), "stats: field \"mac\" is not used by this command");
        assert!(err(r#"{"cmd":"flush"}"#).starts_with("unknown command 'flush'"));
        assert!(err(r#"{"cmd":"stats","vni":1}"#).contains("unknown field `vni`"));
        assert!(err("garbage").starts_with("request is not a JSON object"));
        let long_field = format!("{{\"{}\":1}}", "é".repeat(1000));
        assert!(err(&long_field).len() < 300, "an error does not echo a long field name");
        assert!(err("[1,2]").starts_with("request is not a JSON object"));
        assert_eq!(parse_request(&[0xff, 0xfe]), Err(ProtoError::NotUtf8));
        let huge = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(parse_request(&huge), Err(ProtoError::TooLong { len: MAX_REQUEST + 1 }));
    }

    #[test]
    fn response_lines_have_a_fixed_shape() {
        assert_eq!(Response::Error("no".into()).to_line(), r#"{"error":"no"}"#);
        assert_eq!(Response::Ok(Reply::Done("added".into())).to_line(), r#"{"ok":{"done":"added"}}"#);
        let row = NeighRow { ip: Ipv4Addr::new(10, 244, 2, 0), lladdr: "02:00:00:00:00:02".into(), dev: "vtep0".into(), origin: Origin::Peer };
        assert_eq!(Response::Ok(Reply::Neigh(vec![row])).to_line(),
            r#"{"ok":{"neigh":[{"ip":"10.244.2.0","lladdr":"02:00:00:00:00:02","dev":"vtep0","origin":"peer"}]}}"#);
    }
}
