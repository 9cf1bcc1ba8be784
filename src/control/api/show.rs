//! Human output of the control CLI, in the shapes network engineers already read:
//! `vtepd fdb show` like `bridge fdb show`, `vtepd neigh show` like `ip neigh show`,
//! `vtepd route show` like `ip route show`, `vtepd peers` like `calicoctl node status`.
use super::proto::*;
use std::fmt::Write;

/// The text `vtepd <command>` prints for `reply` (ends with a newline unless empty).
pub fn human(reply: &Reply) -> String {
    match reply {
        Reply::Fdb(rows) => lines(rows.iter().map(fdb_line)),
        Reply::Neigh(rows) => lines(rows.iter().map(neigh_line)),
        Reply::Routes(rows) => lines(rows.iter().map(route_line)),
        Reply::Peers(p) => peers(p),
        Reply::Stats(s) => stats(s),
        Reply::Leases(l) => leases(l),
        Reply::Done(msg) => format!("{msg}\n"),
    }
}

/// The `--json` output: the reply's body alone (an array for the tables, an object otherwise),
/// as `bridge -j fdb show` prints an array.
pub fn json(reply: &Reply) -> String {
    let body = match reply {
        Reply::Fdb(r) => serde_json::to_value(r),
        Reply::Neigh(r) => serde_json::to_value(r),
        Reply::Routes(r) => serde_json::to_value(r),
        Reply::Peers(r) => serde_json::to_value(r),
        Reply::Stats(r) => serde_json::to_value(r),
        Reply::Leases(r) => serde_json::to_value(r),
        Reply::Done(m) => Ok(serde_json::json!({ "done": m })),
    };
    // These types are plain data and always serialise.
    let body = body.unwrap_or(serde_json::Value::Null);
    serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
}

fn lines(it: impl Iterator<Item = String>) -> String {
    it.map(|l| l + "\n").collect()
}

fn manual(o: Origin) -> &'static str {
    match o {
        Origin::Peer => "",
        Origin::Manual => " manual",
    }
}

fn fdb_line(r: &FdbRow) -> String {
    format!("{} dev {} dst {} self permanent{}", r.mac, r.dev, r.dst, manual(r.origin))
}

fn neigh_line(r: &NeighRow) -> String {
    format!("{} dev {} lladdr {} PERMANENT{}", r.ip, r.dev, r.lladdr, manual(r.origin))
}

fn route_line(r: &RouteRow) -> String {
    let missing = if r.in_kernel == Some(false) { "    # not in the kernel: vtepd retries every 5 s (see its log)" } else { "" };
    format!("{} via {} dev {}{}{missing}", r.dst, r.via, r.dev, if r.onlink { " onlink" } else { "" })
}

/// A boxed table like calicoctl's: `+---+` rules, `| a | b |` rows, columns as wide as their widest cell.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.len())).max().unwrap_or(0).max(head[i].len()))
        .collect();
    let rule: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let row = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (c, w) in cells.zip(&widths) {
            let _ = write!(s, "| {c:<w$} ");
        }
        s + "|\n"
    };
    let mut out = rule.clone();
    out += &row(&mut head.iter().copied());
    out += &rule;
    for r in rows {
        out += &row(&mut r.iter().map(String::as_str));
    }
    out + &rule
}

fn ago(secs: Option<u64>, observable: bool) -> String {
    match (secs, observable) {
        (_, false) => "-".into(),
        (None, true) => "never".into(),
        (Some(s), true) => format!("{s}s ago"),
    }
}

fn peers(p: &PeersReply) -> String {
    let mut out = format!("vtepd is running ({} backend, {} peers)\n", p.backend, p.peers.len());
    if let Some(ds) = &p.datastore {
        out += &format!("datastore: {ds}\n");
    }
    let rows: Vec<Vec<String>> = p
        .peers
        .iter()
        .map(|r| {
            let state = match (r.reachable, &r.not_installed) {
                (_, Some(_)) => "NOT INSTALLED",
                (Some(true), _) => "up",
                (Some(false), _) => "silent",
                (None, _) => "not observed",
            };
            vec![
                r.public_ip.to_string(),
                r.subnet.to_string(),
                r.mode.clone(),
                r.vtep_mac.clone().unwrap_or_else(|| "-".into()),
                state.into(),
                ago(r.last_heard_secs, r.reachable.is_some()),
            ]
        })
        .collect();
    out += "\n";
    out += &table(&["PEER ADDRESS", "SUBNET", "MODE", "VTEP MAC", "STATE", "LAST HEARD"], &rows);
    for r in &p.peers {
        if let Some(why) = &r.not_installed {
            let _ = writeln!(out, "{} not installed (retried every 5 s): {why}", r.public_ip);
        }
    }
    out
}

fn stats(s: &StatsReply) -> String {
    let tables = s.tables.iter().map(|(n, c)| (format!("table_{n}_entries"), *c));
    let workers = s.workers.iter().enumerate().flat_map(|(i, w)| {
        [(format!("worker{i}_rx_packets"), w.rx_packets), (format!("worker{i}_tx_packets"), w.tx_packets)]
    });
    let all: Vec<(String, u64)> = s.counters.iter().cloned().chain(tables).chain(workers).collect();
    let w = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out: String = all.iter().map(|(n, c)| format!("{n:<w$} {c}\n")).collect();
    if let Some(ds) = &s.datastore {
        out += &format!("{:<w$} {ds}\n", "datastore");
    }
    out
}

fn leases(l: &[LeaseJson]) -> String {
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|r| {
            vec![
                r.subnet.to_string(),
                r.public_ip.to_string(),
                r.backend.clone(),
                r.vtep_mac.clone().unwrap_or_else(|| "-".into()),
                r.expires_in_secs.map_or_else(|| "reserved".into(), |s| format!("{s}s")),
                if r.own { "yes".into() } else { String::new() },
            ]
        })
        .collect();
    table(&["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES IN", "OWN"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn fdb_and_neigh_read_like_iproute2() {
        let fdb = Reply::Fdb(vec![
            FdbRow { mac: "02:00:00:00:00:02".into(), dst: Ipv4Addr::new(192, 0, 2, 2), dev: "vtep0".into(), origin: Origin::Peer },
            FdbRow { mac: "02:00:00:00:00:09".into(), dst: Ipv4Addr::new(192, 0, 2, 2), dev: "vtep0".into(), origin: Origin::Manual },
        ]);
        assert_eq!(human(&fdb), "02:00:00:00:00:02 dev vtep0 dst 192.0.2.2 self permanent\n\
                                 02:00:00:00:00:09 dev vtep0 dst 192.0.2.2 self permanent manual\n");
        let neigh = Reply::Neigh(vec![NeighRow { ip: Ipv4Addr::new(10, 244, 2, 0), lladdr: "02:00:00:00:00:02".into(), dev: "vtep0".into(), origin: Origin::Peer }]);
        assert_eq!(human(&neigh), "10.244.2.0 dev vtep0 lladdr 02:00:00:00:00:02 PERMANENT\n");
        let routes = Reply::Routes(vec![RouteRow { dst: "10.244.2.0/24".parse().unwrap(), via: Ipv4Addr::new(10, 244, 2, 0), dev: "vtep0".into(), onlink: true, in_kernel: Some(true) }]);
        assert_eq!(human(&routes), "10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink\n");
        let lost = Reply::Routes(vec![RouteRow { dst: "10.244.2.0/24".parse().unwrap(), via: Ipv4Addr::new(10, 244, 2, 0), dev: "vtep0".into(), onlink: true, in_kernel: Some(false) }]);
        assert!(human(&lost).starts_with("10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink    # not in the kernel"), "{}", human(&lost));
        assert_eq!(json(&Reply::Fdb(vec![])), "[]\n");
    }

    #[test]
    fn peers_table_lines_up() {
        let p = PeersReply {
            backend: "vxlan".into(),
            datastore: None,
            peers: vec![
                PeerRow { public_ip: Ipv4Addr::new(192, 0, 2, 2), subnet: "10.244.2.0/24".parse().unwrap(), mode: "vxlan".into(),
                    vtep_mac: Some("02:00:00:00:00:02".into()), reachable: Some(true), last_heard_secs: Some(3), not_installed: None },
                PeerRow { public_ip: Ipv4Addr::new(192, 0, 2, 30), subnet: "10.244.30.0/24".parse().unwrap(), mode: "direct".into(),
                    vtep_mac: None, reachable: None, last_heard_secs: None, not_installed: None },
            ],
        };
        let want = "vtepd is running (vxlan backend, 2 peers)\n\n\
            +--------------+----------------+--------+-------------------+--------------+------------+\n\
            | PEER ADDRESS | SUBNET         | MODE   | VTEP MAC          | STATE        | LAST HEARD |\n\
            +--------------+----------------+--------+-------------------+--------------+------------+\n\
            | 192.0.2.2    | 10.244.2.0/24  | vxlan  | 02:00:00:00:00:02 | up           | 3s ago     |\n\
            | 192.0.2.30   | 10.244.30.0/24 | direct | -                 | not observed | -          |\n\
            +--------------+----------------+--------+-------------------+--------------+------------+\n";
        assert_eq!(human(&Reply::Peers(p)), want);
    }

    #[test]
    fn a_peer_not_installed_says_why_under_the_table() {
        let p = PeersReply {
            backend: "vxlan".into(),
            datastore: None,
            peers: vec![PeerRow { public_ip: Ipv4Addr::new(192, 0, 2, 3), subnet: "10.244.3.0/24".parse().unwrap(), mode: "vxlan".into(),
                vtep_mac: None, reachable: None, last_heard_secs: None, not_installed: Some("the kernel already has blackhole 10.244.3.0/24".into()) }],
        };
        let text = human(&Reply::Peers(p));
        assert!(text.contains("| NOT INSTALLED |"), "{text}");
        assert!(text.ends_with("+\n192.0.2.3 not installed (retried every 5 s): the kernel already has blackhole 10.244.3.0/24\n"), "{text}");
    }

    #[test]
    fn stats_align_names() {
        let s = StatsReply {
            counters: vec![("rx_packets".into(), 5), ("drop_rx_wrong_vni".into(), 1)],
            tables: vec![("fdb".into(), 2)],
            datastore: None,
            datastore_reachable: None,
            workers: vec![WorkerLoad { rx_packets: 3, tx_packets: 4 }],
        };
        let want = "rx_packets         5\ndrop_rx_wrong_vni  1\ntable_fdb_entries  2\nworker0_rx_packets 3\nworker0_tx_packets 4\n";
        assert_eq!(human(&Reply::Stats(s)), want);
    }
}
