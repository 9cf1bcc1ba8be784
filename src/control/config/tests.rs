use super::*;

/// The smallest valid VXLAN config: one node, one peer. The fuzzers seed from the same file.
const GOOD: &str = include_str!("testdata/minimal.toml");

fn err_of(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn control_socket_is_a_top_level_path() {
    assert_eq!(Config::parse(GOOD).unwrap().control_socket, None);
    let c = Config::parse(&format!("control_socket = \"/run/x/a.sock\"\n{GOOD}")).unwrap();
    assert_eq!(c.control_socket, Some(PathBuf::from("/run/x/a.sock")));
    assert_eq!(err_of(&format!("control_socket = \"/run/x/\"\n{GOOD}")), "config key control_socket: '/run/x/' is not a file path");
}

#[test]
fn good_config_parses() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.vxlan.vni.get(), 1);
    assert_eq!(c.vxlan.port, 8472);
    assert_eq!(c.peers[0].vtep_ip(), Ipv4Addr::new(10, 244, 2, 0));
    assert_eq!(c.node.vtep_ip(), Ipv4Addr::new(10, 244, 1, 0));
}

#[test]
fn defaults() {
    let c = Config::parse("[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n").unwrap();
    assert_eq!(c.vxlan.device, "vtep0");
    assert_eq!(c.vxlan.port, 4789);
    assert_eq!(c.vxlan.vni.get(), 1);
    assert_eq!(c.vxlan.mac, MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(c.vxlan.mtu, None);
}

#[test]
fn each_error_names_its_key() {
    let cases = [
        (GOOD.replace("vni = 1", "vni = 16777216"), "vxlan.vni"),
        (GOOD.replace("vni = 1", "vni = -1"), "vxlan.vni"),
        (GOOD.replace("port = 8472", "port = 70000"), "vxlan.port"),
        (GOOD.replace("\"192.0.2.2\"", "\"192.0.2.1\""), "peer[0].public_ip"),
        (GOOD.replace("10.244.2.0/24", "10.244.0.0/16"), "peer[0].subnet"),
        (GOOD.replace("10.244.2.0/24", "10.244.2.7/24"), "peer[0].subnet"),
        (GOOD.replace("\"192.0.2.2\"", "\"192.0.2.300\""), "peer[0].public_ip"),
        (GOOD.replace("02:00:00:00:00:02", "02:00:00:00:00"), "peer[0].vtep_mac"),
        (GOOD.replace("backend = \"vxlan\"", "backend = \"gre\""), "node.backend"),
        (GOOD.replace("device = \"vtep0\"", "device = \"a-very-long-device-name\""), "vxlan.device"),
        (GOOD.replace("mtu = 1450", "mtu = 20"), "vxlan.mtu"),
        (GOOD.replace("mtu = 1450", "mtu = 1450\ncolour = 1"), "colour"),
        (GOOD.replace("mac = \"02:00:00:00:00:01\"", "mac = \"01:00:00:00:00:01\""), "vxlan.mac"),
    ];
    for (text, key) in cases {
        let e = err_of(&text);
        assert!(e.contains(key), "expected {key} in: {e}");
    }
}

#[test]
fn device_names_the_kernel_would_mangle_are_refused() {
    let rule = "1 to 15 printable ASCII characters, none of '/', ':', '%' or space";
    for (name, shown) in [("vtep%d", "'vtep%d'"), ("vtep\\u00a0x", "'vtep\u{a0}x'"), ("vtep\\u001b[2J", "'vtep\\u{1b}[2J'"), ("v/0", "'v/0'")] {
        let text = GOOD.replace("device = \"vtep0\"", &format!("device = \"{name}\""));
        assert_eq!(err_of(&text), format!("config key vxlan.device: {shown}: {rule}"));
    }
}

#[test]
fn echoed_values_are_short_and_escaped() {
    let long = "x".repeat(100_000);
    let e = err_of(&GOOD.replace("backend = \"vxlan\"", &format!("backend = \"{long}\"")));
    assert_eq!(e, format!("config key node.backend: '{}…' is not a backend (supported: vxlan, ipip, host-gw)", "x".repeat(40)));
    let e = err_of(&GOOD.replace("backend = \"vxlan\"", "backend = \"\\u001b]0;pwned\\u0007\\nline two\""));
    assert_eq!(e, "config key node.backend: '\\u{1b}]0;pwned\\u{7}\\nline two' is not a backend (supported: vxlan, ipip, host-gw)");
}

const IPIP: &str = r#"
[node]
public_ip = "192.0.2.1"
subnet = "10.244.1.0/26"
backend = "ipip"
[ipip]
device = "tunl0"
direct_routing = true
[[peer]]
public_ip = "192.0.2.2"
subnet = "10.244.1.64/26"
[[peer]]
public_ip = "198.51.100.3"
subnet = "10.244.7.9/32"
"#;

#[test]
fn ipip_config_parses_with_defaults() {
    let c = Config::parse(IPIP).unwrap();
    assert_eq!(c.node.backend, Backend::Ipip);
    assert_eq!(c.ipip, Ipip { device: "tunl0".into(), mtu: None, ttl: 64, direct_routing: true });
    assert!(c.direct_routing());
    assert_eq!(c.peers[0].subnet.to_string(), "10.244.1.64/26");
    assert_eq!(c.peers[1].subnet.prefix_len(), 32);
    let plain = Config::parse(&IPIP.replace("device = \"tunl0\"\ndirect_routing = true\n", "")).unwrap();
    assert_eq!(plain.ipip, Ipip::default());
    assert_eq!(plain.ipip.device, "ipip0");
}

#[test]
fn host_gw_config_parses() {
    let text = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.node.backend, Backend::HostGw);
    assert_eq!(c.peers.len(), 2);
}

#[test]
fn vtep_macs_must_be_unicast() {
    let own = |mac: &str| GOOD.replace("mac = \"02:00:00:00:00:01\"", &format!("mac = \"{mac}\""));
    let peer = |mac: &str| GOOD.replace("vtep_mac = \"02:00:00:00:00:02\"", &format!("vtep_mac = \"{mac}\""));
    let cases = [
        (own("00:00:00:00:00:00"), "config key vxlan.mac: 00:00:00:00:00:00 is the all-zero address, not a unicast MAC"),
        (own("ff:ff:ff:ff:ff:ff"), "config key vxlan.mac: ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC"),
        (own("33:33:00:00:00:01"), "config key vxlan.mac: 33:33:00:00:00:01 is a multicast address (I/G bit set), not a unicast MAC"),
        (peer("00:00:00:00:00:00"), "config key peer[0].vtep_mac: 00:00:00:00:00:00 is the all-zero address, not a unicast MAC"),
        (peer("ff:ff:ff:ff:ff:ff"), "config key peer[0].vtep_mac: ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC"),
        (peer("01:00:5e:00:00:01"), "config key peer[0].vtep_mac: 01:00:5e:00:00:01 is a multicast address (I/G bit set), not a unicast MAC"),
    ];
    for (text, want) in cases {
        assert_eq!(err_of(&text), want);
    }
}

#[test]
fn overlay_subnets_must_be_usable_for_pods() {
    let host_gw = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
    let cases = [
        (GOOD.replace("10.244.1.0/24", "127.0.0.0/24"), "node.subnet: 127.0.0.0/24 overlaps 127.0.0.0/8 (loopback)"),
        (GOOD.replace("10.244.1.0/24", "224.1.0.0/24"), "node.subnet: 224.1.0.0/24 overlaps 224.0.0.0/4 (multicast)"),
        (GOOD.replace("10.244.1.0/24", "0.0.0.0/0"), "node.subnet: 0.0.0.0/0 overlaps 0.0.0.0/8"),
        (GOOD.replace("10.244.1.0/24", "255.255.255.0/30"), "node.subnet: 255.255.255.0/30 overlaps 240.0.0.0/4 (reserved, and broadcast)"),
        (GOOD.replace("10.244.2.0/24", "240.0.0.0/24"), "peer[0].subnet: 240.0.0.0/24 overlaps 240.0.0.0/4"),
        (IPIP.replace("10.244.7.9/32", "239.1.1.1/32"), "peer[1].subnet: 239.1.1.1/32 overlaps 224.0.0.0/4 (multicast)"),
        (host_gw.replace("10.244.7.9/32", "0.0.0.1/32"), "peer[1].subnet: 0.0.0.1/32 overlaps 0.0.0.0/8"),
        (host_gw.replace("10.244.7.9/32", "127.0.0.1/32"), "peer[1].subnet: 127.0.0.1/32 overlaps 127.0.0.0/8 (loopback)"),
        (GOOD.replace("\"192.0.2.2\"", "\"240.0.0.1\""), "peer[0].public_ip: 240.0.0.1 is not a unicast host address"),
    ];
    for (text, want) in cases {
        let e = err_of(&text);
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
}

#[test]
fn an_overlay_subnet_containing_an_underlay_address_is_an_encapsulation_loop() {
    let host_gw = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
    let cases = [
        (GOOD.replace("10.244.1.0/24", "192.0.2.0/24"), "node.subnet: 192.0.2.0/24 contains node.public_ip 192.0.2.1"),
        (
            GOOD.replace("10.244.1.0/24", "192.0.2.0/30").replace("\"192.0.2.1\"", "\"198.51.100.1\""),
            "node.subnet: 192.0.2.0/30 contains peer[0].public_ip 192.0.2.2",
        ),
        (GOOD.replace("10.244.2.0/24", "192.0.2.0/30"), "peer[0].subnet: 192.0.2.0/30 contains node.public_ip 192.0.2.1"),
        (IPIP.replace("10.244.7.9/32", "192.0.2.2/32"), "peer[1].subnet: 192.0.2.2/32 contains peer[0].public_ip 192.0.2.2"),
        (IPIP.replace("10.244.1.64/26", "198.51.100.0/24"), "peer[0].subnet: 198.51.100.0/24 contains peer[1].public_ip 198.51.100.3"),
        (host_gw.replace("10.244.7.9/32", "192.0.2.1/32"), "peer[1].subnet: 192.0.2.1/32 contains node.public_ip 192.0.2.1"),
    ];
    for (text, want) in cases {
        let e = err_of(&text);
        assert!(e.starts_with(&format!("config key {want}: traffic to that underlay address")), "expected `{want}` in: {e}");
        assert!(e.contains("encapsulation loop"), "{e}");
    }
    // Next to the subnet, not inside it: fine.
    assert!(Config::parse(&IPIP.replace("10.244.7.9/32", "198.51.100.4/32")).is_ok());
}

#[test]
fn toml_errors_name_the_full_key() {
    let second_peer = format!("{GOOD}{}", peer_toml("192.0.2.3", "10.244.3.0/24", "02:00:00:00:00:03"));
    let cases = [
        (second_peer.replace("subnet = \"10.244.3.0/24\"\n", ""), "config key peer[1].subnet: missing (line 15, column 1)"),
        (GOOD.replace("vni = 1", "vni = \"1\""), "config key vxlan.vni: expected an integer, found a string (line 7, column 7)"),
        (GOOD.replace("mtu = 1450", "mtu = 1450.0"), "config key vxlan.mtu: expected an integer, found a float (line 10, column 7)"),
        (IPIP.replace("direct_routing = true", "direct_routing = \"yes\""), "config key ipip.direct_routing: expected a boolean, found a string (line 8, column 18)"),
        (GOOD.replace("[node]\n", "node = 1\n[nod]\n"), "config key node: expected a table, found an integer (line 1, column 8)"),
        ("[node]\nsubnet = \"10.244.1.0/24\"\n".into(), "config key node.public_ip: missing (line 1, column 1)"),
        ("".into(), "config key node: missing (line 1, column 1)"),
        (
            GOOD.replace("mtu = 1450", "colour = 1"),
            "config key vxlan.colour: unknown key (known keys here: device, vni, port, mac, mtu, direct_routing) (line 10, column 1)",
        ),
        ("'' = 0".to_string(), "config key \"\": unknown key (known keys here: control_socket, node, vxlan, ipip, peer, etcd) (line 1, column 1)"),
        (GOOD.replace("mtu = 1450", "lan = 1"), "config key vxlan.lan: unknown key (known keys here: device, vni, port, mac, mtu, direct_routing) (line 10, column 1)"),
        (format!("{ETCD}[etcd]\n"), "config : invalid table header; duplicate key `etcd` in document root (line 8, column 1)"),
        // Too large for TOML's 64-bit integers: a syntax error, but on the line of a key.
        (GOOD.replace("mtu = 1450", "mtu = 99999999999999999999"), "config key vxlan.mtu: number too large to fit in target type (line 10, column 7)"),
        (
            second_peer.replace("subnet = \"10.244.3.0/24\"", "subnet = 10.244.3.0/24"),
            "config key peer[1].subnet: expected newline, `#` (line 17, column 16)",
        ),
        // Serde would read a section written as an array of its values in field order, extra
        // values and all: a section is a table or nothing.
        (
            "node = [\"192.0.2.1\", \"10.244.1.0/24\", \"vxlan\", [1, 2, 3], \"anything\"]\n".into(),
            "config key node: expected a table, found an array (line 1, column 8)",
        ),
        (format!("vxlan = [\"vtep9\", 7]\n{GOOD}").replace("[vxlan]", "[x]"), "config key vxlan: expected a table, found an array (line 1, column 9)"),
        (format!("peer = [[\"192.0.2.2\", \"10.244.2.0/24\"]]\n{IPIP}").replace("[[peer]]", "[[x]]"), "config key peer[0]: expected a table, found an array (line 1, column 9)"),
        (format!("etcd = []\n{ETCD}").replace("[etcd]", "[x]"), "config key etcd: expected a table, found an array (line 1, column 8)"),
    ];
    for (text, want) in cases {
        assert_eq!(err_of(&text), want, "config:\n{text}");
    }
}

#[test]
fn ipip_errors_name_their_key() {
    let cases = [
        (IPIP.replace("direct_routing = true", "ttl = 0"), "ipip.ttl"),
        (IPIP.replace("direct_routing = true", "ttl = 256"), "ipip.ttl"),
        (IPIP.replace("direct_routing = true", "mtu = 40"), "ipip.mtu"),
        (IPIP.replace("direct_routing = true", "direct_routing = 1"), "direct_routing"),
        (IPIP.replace("device = \"tunl0\"", "device = \"a/b\""), "ipip.device"),
        (IPIP.replace("\"10.244.1.64/26\"", "\"10.244.1.64/26\"\nvtep_mac = \"02:00:00:00:00:02\""), "peer[0].vtep_mac"),
        (IPIP.replace("\"10.244.1.64/26\"", "\"10.244.1.0/25\""), "peer[0].subnet"),
        (format!("{IPIP}[vxlan]\nvni = 2\n"), "vxlan"),
        (GOOD.replace("mtu = 1450", "mtu = 1450\n[ipip]\n"), "ipip"),
        (GOOD.replace("vtep_mac = \"02:00:00:00:00:02\"", ""), "peer[0].vtep_mac"),
    ];
    for (text, key) in cases {
        let e = err_of(&text);
        assert!(e.contains(key), "expected {key} in: {e}");
    }
}

#[test]
fn example_configs_are_valid() {
    for name in ["ipip.toml", "host-gw.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
        if let Err(e) = Config::load(&path) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn shipped_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vxlan.toml");
    let c = Config::load(Path::new(path)).unwrap();
    assert_eq!((c.vxlan.port, c.peers.len()), (8472, 1));
}

#[test]
fn overlapping_peers_are_refused() {
    let text = format!("{GOOD}[[peer]]\npublic_ip = \"192.0.2.3\"\nsubnet = \"10.244.2.128/25\"\nvtep_mac = \"02:00:00:00:00:03\"\n");
    assert!(err_of(&text).contains("peer[1].subnet: 10.244.2.128/25 overlaps peer[0].subnet"));
}

fn peer_toml(ip: &str, subnet: &str, mac: &str) -> String {
    format!("[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{subnet}\"\nvtep_mac = \"{mac}\"\n")
}

#[test]
fn nested_overlap_is_found_whatever_the_file_order() {
    // peer[0] = 10.244.2.0/24 (in GOOD); the /25 sits inside a /23 listed after an unrelated peer.
    let mut text = GOOD.to_string();
    text += &peer_toml("192.0.2.3", "10.244.5.128/25", "02:00:00:00:00:03");
    text += &peer_toml("192.0.2.4", "10.244.3.0/24", "02:00:00:00:00:04");
    text += &peer_toml("192.0.2.5", "10.244.4.0/23", "02:00:00:00:00:05");
    assert!(err_of(&text).contains("peer[3].subnet: 10.244.4.0/23 overlaps peer[1].subnet 10.244.5.128/25"), "{}", err_of(&text));
    let text = GOOD.to_string() + &peer_toml("192.0.2.3", "10.244.2.0/24", "02:00:00:00:00:03");
    assert!(err_of(&text).contains("peer[1].subnet: 10.244.2.0/24 overlaps peer[0].subnet 10.244.2.0/24"), "{}", err_of(&text));
}

#[test]
fn duplicate_mac_and_ip_name_both_peers() {
    let text = GOOD.to_string() + &peer_toml("192.0.2.2", "10.244.3.0/24", "02:00:00:00:00:03");
    assert!(err_of(&text).contains("peer[1].public_ip: 192.0.2.2 is also peer[0].public_ip"), "{}", err_of(&text));
    let text = GOOD.to_string() + &peer_toml("192.0.2.3", "10.244.3.0/24", "02:00:00:00:00:02");
    assert!(err_of(&text).contains("peer[1].vtep_mac: 02:00:00:00:00:02 is also peer[0].vtep_mac"), "{}", err_of(&text));
}

#[test]
fn many_disjoint_peers_are_accepted() {
    // Every underlay address of both documentation ranges, each with a /30 next to the last.
    let mut text = GOOD.to_string();
    let hosts = (3..=254u8).map(|h| format!("192.0.2.{h}")).chain((1..=254u8).map(|h| format!("198.51.100.{h}")));
    for (i, ip) in hosts.enumerate() {
        let subnet = format!("10.244.{}.{}/30", 3 + i / 64, (i % 64) * 4);
        text += &peer_toml(&ip, &subnet, &format!("02:00:00:01:{:02x}:{:02x}", i >> 8, i & 0xff));
    }
    let cfg = Config::parse(&text).map_err(|e| e.to_string()).unwrap();
    assert_eq!(cfg.peers.len(), 1 + 252 + 254);
}

const ETCD: &str = r#"
[node]
public_ip = "192.0.2.1"
[etcd]
endpoints = ["http://192.0.2.254:2379"]
[vxlan]
device = "flannel0"
"#;

#[test]
fn etcd_mode_defaults() {
    let c = Config::parse(ETCD).unwrap();
    let e = c.etcd.as_ref().unwrap();
    assert_eq!(e.prefix, "/coreos.com/network");
    assert_eq!(e.subnet_file, Path::new("/run/flannel/subnet.env"));
    assert_eq!(e.tls, None);
    assert_eq!(c.node.subnet, Node::UNJOINED);
    assert!(c.peers.is_empty());
    assert_eq!(c.vxlan.device, "flannel0");
    // Stable across restarts: derived from the underlay address, not random.
    assert_eq!(c.vxlan.mac, MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1)));
}

#[test]
fn etcd_mode_refuses_what_etcd_owns() {
    let cases = [
        (ETCD.replace("public_ip = \"192.0.2.1\"", "public_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\""), "node.subnet"),
        (ETCD.replace("public_ip = \"192.0.2.1\"", "public_ip = \"192.0.2.1\"\nbackend = \"vxlan\""), "node.backend"),
        (format!("{ETCD}vni = 1\n"), "vxlan.vni"),
        (format!("{ETCD}port = 8472\n"), "vxlan.port"),
        (format!("{ETCD}direct_routing = true\n"), "vxlan.direct_routing"),
        (format!("{ETCD}[ipip]\ndirect_routing = true\n"), "ipip.direct_routing"),
        (format!("{ETCD}[[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\n"), "peer"),
        (ETCD.replace("[\"http://192.0.2.254:2379\"]", "[]"), "etcd.endpoints"),
        (ETCD.replace("\"http://192.0.2.254:2379\"", "\"192.0.2.254:2379\""), "etcd.endpoints[0]"),
        (ETCD.replace("[vxlan]", "prefix = \"coreos.com/network\"\n[vxlan]"), "etcd.prefix"),
        (ETCD.replace("[vxlan]", "ca = \"/nonexistent/ca.pem\"\n[vxlan]"), "etcd.cert"),
        (ETCD.replace("[vxlan]", "ca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n[vxlan]"), "etcd.ca"),
        (ETCD.replace("[vxlan]", "colour = 1\n[vxlan]"), "colour"),
    ];
    for (text, key) in cases {
        let e = err_of(&text);
        assert!(e.contains(key), "expected {key} in: {e}");
    }
    assert!(err_of("[node]\npublic_ip = \"192.0.2.1\"\n").contains("node.subnet"));
}

#[test]
fn endpoints_and_paths_that_could_not_work_are_refused_up_front() {
    let endpoint = |e: &str| err_of(&ETCD.replace("http://192.0.2.254:2379", e));
    for (e, why) in [
        ("http://", ""),
        ("http://a b:2379", ""),
        ("ftp://192.0.2.254:2379", " (the scheme is http or https)"),
        ("http://192.0.2.254:99999", " (the port is 1 to 65535)"),
        ("http://192.0.2.254:0", " (the port is 1 to 65535)"),
    ] {
        assert_eq!(endpoint(e), format!("config key etcd.endpoints[0]: '{e}' is not a URL like http://192.0.2.10:2379{why}"));
    }
    for ok in ["https://etcd.example:2379", "http://[2001:db8::1]:2379", "http://192.0.2.254"] {
        assert!(Config::parse(&ETCD.replace("http://192.0.2.254:2379", ok)).is_ok(), "{ok}");
    }
    let subnet_file = |p: &str| err_of(&ETCD.replace("[vxlan]", &format!("subnet_file = \"{p}\"\n[vxlan]")));
    assert_eq!(subnet_file("/"), "config key etcd.subnet_file: '/' is not a file path");
    assert_eq!(subnet_file(""), "config key etcd.subnet_file: '' is not a file path");
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap().trim_end_matches('/');
    assert_eq!(subnet_file(dir), format!("config key etcd.subnet_file: '{dir}' is a directory; name a file in it"));
    let socket = |p: &str| err_of(&format!("control_socket = \"{p}\"\n{GOOD}"));
    let long = format!("/run/{}", "s".repeat(103));
    assert_eq!(socket(&long), format!("config key control_socket: '{}…' is 108 bytes long; a Unix socket path holds at most 107", &long[..40]));
    assert!(Config::parse(&format!("control_socket = \"{}\"\n{GOOD}", &long[..107])).is_ok());
    assert_eq!(socket("/run/a\\u0000b"), "config key control_socket: '/run/a\\u{0}b' is not a file path");
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vtepd-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `path` on another thread, so a regression that blocks fails the test instead of hanging it.
fn load_within_seconds(path: &Path) -> Result<Config, ConfigError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    // The send fails only if the test gave up waiting; nothing to do then.
    std::thread::spawn(move || {
        let _ = tx.send(Config::load(&path));
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("Config::load blocked")
}

#[test]
fn only_regular_files_are_read() {
    let dir = Scratch::new("kinds");
    let fifo = dir.0.join("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path and nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cases = [
        (fifo.as_path(), "is a FIFO, not a regular file"),
        (Path::new("/dev/zero"), "is a character device, not a regular file"),
        (dir.0.as_path(), "is a directory, not a regular file"),
    ];
    for (path, want) in cases {
        let e = load_within_seconds(path).unwrap_err().to_string();
        assert_eq!(e, format!("config {} {want}", path.display()));
    }
}

#[test]
fn a_file_over_the_limit_is_refused() {
    let dir = Scratch::new("big");
    let path = dir.0.join("big.toml");
    // Sparse: no disk or memory is spent on it.
    std::fs::File::create(&path).unwrap().set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let e = load_within_seconds(&path).unwrap_err().to_string();
    assert_eq!(e, format!("config {} is larger than 64 MiB, the limit for a config file", path.display()));
    std::fs::write(&path, GOOD).unwrap();
    assert!(load_within_seconds(&path).is_ok());
}

#[test]
fn shipped_etcd_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/etcd.toml");
    let c = Config::load(Path::new(path)).unwrap();
    assert_eq!(c.etcd.unwrap().endpoints, ["http://192.0.2.254:2379"]);
}

#[test]
fn tls_files_with_an_http_endpoint_are_refused() {
    let dir = Scratch::new("tls");
    let mut files = String::new();
    for k in ["ca", "cert", "key"] {
        let p = dir.0.join(format!("{k}.pem"));
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\n").unwrap();
        files.push_str(&format!("{k} = \"{}\"\n", p.display()));
    }
    let with_tls = ETCD.replace("[vxlan]", &format!("{files}[vxlan]"));
    assert_eq!(
        err_of(&with_tls),
        "config key etcd.endpoints[0]: 'http://192.0.2.254:2379' is http:// while etcd.ca, etcd.cert and etcd.key are set: TLS needs https://"
    );
    assert!(Config::parse(&with_tls.replace("http://", "https://")).is_ok());
}
