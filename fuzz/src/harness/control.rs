//! `control_request`: arbitrary bytes as one control-socket request line, through
//! `parse_request` and, if it parses, the dispatcher against in-memory tables (no root, no kernel).
//!
//! Input: the bytes, as the server hands them over (a line without its newline; the server passes
//! any length up to `MAX_REQUEST + 1` here).
//!
//! Checked: no panic; an over-long request is refused as such; an error's text is short (it never
//! echoes an unbounded part of the input back); an accepted request writes back to a line that
//! parses to the same request; the answer is one well-formed response line that parses back to
//! itself and formats for humans and as JSON; and no request ever changes the peer's own FDB or
//! neighbour entry.
use vtepd::control::api::dispatch::{answer, View};
use vtepd::control::api::proto::{parse_request, ProtoError, Response, MAX_REQUEST};
use vtepd::control::api::show;
use vtepd::control::config::Config;
use vtepd::table::{Peer, Tables};

const CONFIG: &str = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n\n[vxlan]\nmac = \"02:00:00:00:00:01\"\n\n\
    [[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\nvtep_mac = \"02:00:00:00:00:02\"\n";

pub fn run(data: &[u8]) {
    let req = match parse_request(data) {
        Ok(r) => r,
        Err(e) => {
            if data.len() > MAX_REQUEST {
                assert_eq!(e, ProtoError::TooLong { len: data.len() });
            }
            let text = e.to_string();
            assert!(!text.is_empty() && text.len() < 400, "error of {} bytes: {text}", text.len());
            return;
        }
    };
    assert!(data.len() <= MAX_REQUEST);
    let line = req.to_line();
    assert_eq!(parse_request(line.as_bytes()).as_ref(), Ok(&req), "round trip through {line}");

    let cfg = Config::parse(CONFIG).expect("the harness config is valid");
    let tables = Tables::default();
    let p = cfg.peers[0];
    let peer = Peer { underlay_ip: p.public_ip, vtep_mac: p.vtep_mac, vtep_ip: p.vtep_ip() };
    tables.add_peer(&peer);
    let view = View { cfg: &cfg, tables: &tables, peers: cfg.peers.clone(), not_installed: vec![], counters: vec![("rx_packets", 1)], workers: vec![], datastore: None, lost_routes: None };
    let resp = answer(req, &view);
    let out = resp.to_line();
    assert!(!out.contains('\n'), "a response is one line: {out}");
    assert_eq!(Response::from_line(&out).as_ref(), Ok(&resp), "response round trip through {out}");
    if let Response::Ok(reply) = &resp {
        let _ = show::human(reply);
        assert!(show::json(reply).ends_with('\n'));
    }
    assert_eq!(tables.fdb.load().get(&peer.vtep_mac), Some(&peer.underlay_ip), "the peer's FDB entry changed");
    assert_eq!(tables.neigh.load().get(&peer.vtep_ip), Some(&peer.vtep_mac), "the peer's neighbour entry changed");
}
