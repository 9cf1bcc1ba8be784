use super::*;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::thread;

const MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x02, 0x00];
const MAC2: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x02, 0x01];

/// `ip netns add` sets up the /run/netns mount the first time; concurrent first calls race.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace with a veth pair `a`/`b` in it, removed on drop, also when a test fails.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(test: &str) -> Self {
        let name = format!("vtepd-nl-{test}-{}", std::process::id());
        {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            run(&["netns", "add", &name]);
        }
        let ns = NetNs { name };
        // `name` is needed: iproute2 reads a bare `a` as the abbreviation of `address`.
        ns.ip(&[
            "link", "add", "name", "a", "type", "veth", "peer", "name", "b",
        ]);
        // As on any real host. Until lo is up or an address exists, the namespace has no
        // local routing table, and without one the kernel refuses every onlink gateway
        // ("Nexthop has invalid gateway") because it cannot tell that the gateway is not local.
        ns.ip(&["link", "set", "dev", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        run(&[&["-n", &self.name], args].concat())
    }

    /// A socket opened from a thread inside the namespace. Network namespaces are per thread,
    /// and a socket stays in the namespace it was created in, so the test thread can use it.
    fn netlink(&self) -> Netlink {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns(2) only reads the descriptor, which `ns` keeps open; it moves this
            // short-lived thread alone into the namespace.
            let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns {path}: {}", io::Error::last_os_error());
            Netlink::open().expect("open netlink in namespace")
        })
        .join()
        .expect("netns thread panicked")
    }

    fn index(&self, nl: &mut Netlink, dev: &str) -> u32 {
        nl.link_index(dev)
            .unwrap()
            .unwrap_or_else(|| panic!("{dev} exists in {}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _lock = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("could not remove network namespace {}", self.name);
        }
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ip {}: {stderr}", args.join(" "));
    String::from_utf8(out.stdout).expect("ip prints UTF-8")
}

/// The flags between `<` and `>` in `ip link show`.
fn link_flags(show: &str) -> Vec<&str> {
    let start = show.find('<').expect("flags start") + 1;
    let end = show.find('>').expect("flags end");
    show[start..end].split(',').collect()
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::trim)
        .collect()
}

#[test]
fn link_up_mtu_mac() {
    let ns = NetNs::new("link");
    let mut nl = ns.netlink();
    let a = ns.index(&mut nl, "a");
    assert_eq!(nl.link_index("nosuchdev").unwrap(), None);

    nl.set_link(a, true, Some(1400), Some(MAC)).unwrap();
    let show = ns.ip(&["link", "show", "dev", "a"]);
    assert!(link_flags(&show).contains(&"UP"), "{show}");
    assert!(show.contains(" mtu 1400 "), "{show}");
    assert!(show.contains("link/ether 02:42:0a:f4:02:00 "), "{show}");
    // Read back over netlink, in the namespace the socket lives in (this test's /sys is another's).
    // Up but without carrier: its veth peer is down.
    assert_eq!(nl.link("a").unwrap(), Some(Link { index: a, mtu: 1400, up: false }));
    let b = ns.index(&mut nl, "b");
    nl.set_link(b, true, None, None).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !nl.link("a").unwrap().is_some_and(|l| l.up) {
        assert!(std::time::Instant::now() < deadline, "a never came up: {:?}", nl.link("a"));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(nl.link("nosuchdev").unwrap(), None);

    nl.set_link(a, false, None, None).unwrap();
    let show = ns.ip(&["link", "show", "dev", "a"]);
    assert!(!link_flags(&show).contains(&"UP"), "{show}");
    assert!(
        show.contains(" mtu 1400 "),
        "down must leave the mtu alone: {show}"
    );
}

#[test]
fn addr_add_is_idempotent_and_visible_to_host_has_addr() {
    let ns = NetNs::new("addr");
    let mut nl = ns.netlink();
    let a = ns.index(&mut nl, "a");
    let addr = Ipv4Addr::new(10, 244, 1, 0);

    assert!(!nl.host_has_addr(addr).unwrap());
    nl.add_addr(a, addr, 32).unwrap();
    nl.add_addr(a, addr, 32).unwrap();
    let show = ns.ip(&["addr", "show", "dev", "a"]);
    assert_eq!(lines_with(&show, "inet ").len(), 1, "{show}");
    assert!(show.contains("inet 10.244.1.0/32 scope global a"), "{show}");
    assert!(nl.host_has_addr(addr).unwrap());
    assert!(!nl.host_has_addr(Ipv4Addr::new(10, 244, 1, 1)).unwrap());

    nl.del_addr(a, addr, 32).unwrap();
    nl.del_addr(a, addr, 32).unwrap();
    assert!(!ns.ip(&["addr", "show", "dev", "a"]).contains("inet "));
    assert!(!nl.host_has_addr(addr).unwrap());
}

#[test]
fn onlink_route_add_replace_dump_del() {
    let ns = NetNs::new("route");
    let mut nl = ns.netlink();
    let (a, b) = (ns.index(&mut nl, "a"), ns.index(&mut nl, "b"));
    // The kernel refuses an onlink next hop on a device that is down.
    nl.set_link(b, true, None, None).unwrap();
    nl.set_link(a, true, None, None).unwrap();

    let subnet = Ipv4Addr::new(10, 244, 2, 0);
    let mut vxlan = Route {
        dst: subnet,
        prefix_len: 24,
        gateway: Some(subnet),
        ifindex: a,
        onlink: true,
    };
    nl.add_route(&vxlan).unwrap();
    nl.add_route(&vxlan).unwrap();
    let show = ns.ip(&["route", "show"]);
    let lines = lines_with(&show, "10.244.2.0/24");
    assert_eq!(lines.len(), 1, "{show}");
    assert!(
        lines[0].starts_with("10.244.2.0/24 via 10.244.2.0 dev a proto 118 onlink"),
        "{show}"
    );

    // Replace: same prefix, new next hop; still one route.
    vxlan.gateway = Some(Ipv4Addr::new(10, 244, 2, 1));
    nl.add_route(&vxlan).unwrap();
    let show = ns.ip(&["route", "show"]);
    let lines = lines_with(&show, "10.244.2.0/24");
    assert_eq!(lines.len(), 1, "{show}");
    assert!(
        lines[0].starts_with("10.244.2.0/24 via 10.244.2.1 dev a proto 118 onlink"),
        "{show}"
    );

    // A host-gw route next to it; its gateway must be on a connected subnet.
    nl.add_addr(a, Ipv4Addr::new(192, 0, 2, 1), 24).unwrap();
    let gw = Route {
        dst: Ipv4Addr::new(10, 244, 3, 0),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(192, 0, 2, 2)),
        ifindex: a,
        onlink: false,
    };
    nl.add_route(&gw).unwrap();
    let show = ns.ip(&["route", "show"]);
    assert!(
        show.contains("10.244.3.0/24 via 192.0.2.2 dev a proto 118 \n"),
        "{show}"
    );

    let mut ours = nl.routes_by_protocol(RTPROT_VTEPD).unwrap();
    ours.sort_by_key(|r| r.dst);
    assert_eq!(ours, vec![vxlan, gw]);
    let connected = Route {
        dst: Ipv4Addr::new(192, 0, 2, 0),
        prefix_len: 24,
        gateway: None,
        ifindex: a,
        onlink: false,
    };
    assert_eq!(
        nl.routes_by_protocol(libc::RTPROT_KERNEL).unwrap(),
        vec![connected]
    );

    // Deleting someone else's route is refused quietly: it does not carry our protocol.
    nl.del_route(&connected).unwrap();
    assert!(ns
        .ip(&["route", "show"])
        .contains("192.0.2.0/24 dev a proto kernel"));

    for r in [vxlan, gw, vxlan] {
        nl.del_route(&r).unwrap();
    }
    let show = ns.ip(&["route", "show"]);
    assert!(!show.contains("10.244."), "{show}");
    assert_eq!(nl.routes_by_protocol(RTPROT_VTEPD).unwrap(), vec![]);
}

#[test]
fn neigh_permanent_add_replace_del() {
    let ns = NetNs::new("neigh");
    let mut nl = ns.netlink();
    let a = ns.index(&mut nl, "a");
    let ip = Ipv4Addr::new(10, 244, 2, 0);

    nl.add_neigh(a, ip, MAC).unwrap();
    let show = ns.ip(&["neigh", "show", "dev", "a"]);
    assert_eq!(
        show.trim(),
        "10.244.2.0 lladdr 02:42:0a:f4:02:00 PERMANENT",
        "{show}"
    );

    nl.add_neigh(a, ip, MAC2).unwrap();
    let show = ns.ip(&["neigh", "show", "dev", "a"]);
    assert_eq!(
        show.trim(),
        "10.244.2.0 lladdr 02:42:0a:f4:02:01 PERMANENT",
        "{show}"
    );

    nl.del_neigh(a, ip).unwrap();
    nl.del_neigh(a, ip).unwrap();
    assert_eq!(ns.ip(&["neigh", "show", "dev", "a"]).trim(), "");
}

#[test]
fn missing_ifindex_errors_name_the_operation() {
    let ns = NetNs::new("errors");
    let mut nl = ns.netlink();
    let missing = 999_999;

    let err = nl.set_link(missing, true, Some(1400), None).unwrap_err();
    assert_eq!(err.to_string(), "set link dev 999999 up mtu 1400");
    assert_eq!(err.errno(), Some(libc::ENODEV));

    let subnet = Ipv4Addr::new(10, 244, 2, 0);
    let r = Route {
        dst: subnet,
        prefix_len: 24,
        gateway: Some(subnet),
        ifindex: missing,
        onlink: true,
    };
    let err = nl.add_route(&r).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("add route 10.244.2.0/24 via 10.244.2.0 dev 999999 onlink"),
        "{msg}"
    );
    assert_eq!(err.errno(), Some(libc::ENODEV), "{msg}");

    let err = nl
        .add_addr(missing, Ipv4Addr::new(10, 244, 1, 0), 32)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("add address 10.244.1.0/32 dev 999999"),
        "{err}"
    );
    assert_eq!(err.errno(), Some(libc::ENODEV));

    // Tolerating "already gone" must not hide a missing device.
    let err = nl
        .del_addr(missing, Ipv4Addr::new(10, 244, 1, 0), 32)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    let err = nl.add_neigh(missing, subnet, MAC).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");

    // The socket is still in step after errors: the next request gets its own answer.
    assert!(ns.index(&mut nl, "a") > 0);
}

#[test]
fn kernel_reason_is_reported() {
    let ns = NetNs::new("extack");
    let mut nl = ns.netlink();
    let a = ns.index(&mut nl, "a");
    nl.set_link(a, true, None, None).unwrap();
    // No connected subnet covers the gateway and the route is not onlink.
    let gw = Ipv4Addr::new(198, 51, 100, 1);
    let r = Route {
        dst: Ipv4Addr::new(10, 244, 3, 0),
        prefix_len: 24,
        gateway: Some(gw),
        ifindex: a,
        onlink: false,
    };
    let err = nl.add_route(&r).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
    assert!(
        matches!(
            &err,
            NetlinkError::Kernel {
                extack: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn invalid_arguments_are_refused_locally() {
    let mut nl = Netlink::open().unwrap();
    let err = nl.link_index("a-name-longer-than-15").unwrap_err();
    assert!(matches!(err, NetlinkError::Invalid { .. }), "{err:?}");
    let err = nl
        .add_addr(1, Ipv4Addr::new(10, 244, 1, 0), 33)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "add address 10.244.1.0/33 dev 1: an IPv4 prefix length is at most 32"
    );
    let r = Route {
        dst: Ipv4Addr::new(10, 244, 2, 0),
        prefix_len: 24,
        gateway: None,
        ifindex: 1,
        onlink: true,
    };
    let err = nl.add_route(&r).unwrap_err();
    assert_eq!(
        err.to_string(),
        "add route 10.244.2.0/24 dev 1 onlink: onlink needs a gateway"
    );
}

#[test]
fn attributes_are_aligned_and_lengths_patched() {
    let mut req = Request::new(RTM_SETLINK, 0, &ifinfomsg(7, IFF_UP, IFF_UP));
    req.attr(IFLA_IFNAME, b"ab\0")
        .attr(IFLA_MTU, &1400_u32.to_ne_bytes());
    let bytes = req.finish(42).to_vec();
    // 16 header + 16 ifinfomsg + (4 + 3 -> 8) + (4 + 4)
    assert_eq!(bytes.len(), 48);
    assert_eq!(ne_u32(Some(&bytes)), Some(48));
    assert_eq!(ne_u32(Some(&bytes[8..])), Some(42));
    assert_eq!(
        u16::from_ne_bytes([bytes[6], bytes[7]]),
        NLM_F_REQUEST | NLM_F_ACK
    );
    assert_eq!(
        &bytes[32..34],
        &7_u16.to_ne_bytes(),
        "nla_len counts the payload, not the padding"
    );
    assert_eq!(
        &bytes[36..40],
        b"ab\0\0",
        "payload padded with zeros to 4 bytes"
    );
    let attrs: Vec<_> = Attrs(&bytes[32..]).collect();
    assert_eq!(
        attrs,
        vec![
            (IFLA_IFNAME, &b"ab\0"[..]),
            (IFLA_MTU, &1400_u32.to_ne_bytes()[..])
        ]
    );
}

/// An `NLMSG_ERROR` as a kernel with `NETLINK_CAP_ACK` and `NETLINK_EXT_ACK` sends it.
fn error_message(errno: i32, text: &[u8]) -> Vec<u8> {
    let mut echoed = Request::new(RTM_NEWROUTE, 0, &[]);
    let mut payload = (-errno).to_ne_bytes().to_vec();
    payload.extend_from_slice(echoed.finish(5));
    let mut tlvs = Request::new(0, 0, &[]);
    tlvs.attr(NLMSGERR_ATTR_MSG, text);
    payload.extend_from_slice(&tlvs.buf[NLMSG_HDRLEN..]);
    let mut msg = Request::new(NLMSG_ERROR, 0, &payload);
    let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
    msg.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg.finish(5).to_vec()
}

#[test]
fn error_with_extack_is_parsed() {
    let bytes = error_message(libc::EINVAL, b"Invalid prefix for given prefix length\0");
    let msg = Messages(&bytes).next().unwrap().unwrap();
    assert_eq!((msg.ty, msg.seq), (NLMSG_ERROR, 5));
    let r = Route {
        dst: Ipv4Addr::new(10, 244, 2, 1),
        prefix_len: 24,
        gateway: None,
        ifindex: 3,
        onlink: false,
    };
    let err = end_of_exchange(&Op::AddRoute(r), &msg).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(
        err.to_string(),
        "add route 10.244.2.1/24 dev 3 (kernel: Invalid prefix for given prefix length)"
    );
}

#[test]
fn truncated_messages_are_refused() {
    let mut bytes = error_message(libc::EINVAL, b"x\0");
    bytes[0] = 200; // nlmsg_len beyond the datagram
    assert!(Messages(&bytes).next().unwrap().is_err());
    assert!(Messages(&bytes[..10]).next().unwrap().is_err());
}

#[test]
fn routes_of_another_kind_at_the_prefix_are_left_alone() {
    let ns = NetNs::new("foreign");
    let mut nl = ns.netlink();
    let a = ns.index(&mut nl, "a");
    nl.set_link(a, true, None, None).unwrap();
    nl.add_addr(a, Ipv4Addr::new(192, 0, 2, 1), 24).unwrap();
    // A Route cannot describe these, so an earlier add_route replaced them unseen.
    ns.ip(&["route", "add", "blackhole", "10.244.4.0/24"]);
    ns.ip(&["route", "add", "unreachable", "10.244.5.0/24"]);
    ns.ip(&["route", "add", "10.244.6.0/24", "nexthop", "via", "192.0.2.2", "nexthop", "via", "192.0.2.3"]);
    let before = ns.ip(&["route", "show"]);
    for (third, existing) in [(4, "blackhole 10.244.4.0/24"), (5, "unreachable 10.244.5.0/24"), (6, "multipath 10.244.6.0/24")] {
        let dst = Ipv4Addr::new(10, 244, third, 0);
        let route = Route { dst, prefix_len: 24, gateway: Some(dst), ifindex: a, onlink: true };
        match nl.add_route(&route) {
            Err(NetlinkError::RouteTaken { existing: e, .. }) => assert_eq!(e, existing),
            other => panic!("{route}: expected RouteTaken, got {other:?}"),
        }
    }
    assert_eq!(ns.ip(&["route", "show"]), before);
}
