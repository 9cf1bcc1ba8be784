//! Which interface holds an address, and its connected subnets (to tell on-link peers from routed
//! ones). Its MTU and state come from netlink (`control::netlink`), not sysfs, which shows the
//! namespace it was mounted in.
use ipnet::Ipv4Net;
use std::ffi::CStr;
use std::net::Ipv4Addr;

/// One IPv4 address of an interface, as getifaddrs(3) reports it.
struct IfAddr<'a> {
    name: &'a CStr,
    addr: Ipv4Addr,
    netmask: Option<Ipv4Addr>,
}

/// Calls `f` for every IPv4 address of every interface until it returns `false`.
fn walk_ipv4(mut f: impl FnMut(&IfAddr<'_>) -> bool) {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_addr and ifa_netmask, when non-null and AF_INET, point at sockaddr_in;
        // ifa_name is a C string; all live until freeifaddrs.
        let entry = unsafe {
            if ifa.ifa_addr.is_null() || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET {
                continue;
            }
            IfAddr {
                name: CStr::from_ptr(ifa.ifa_name),
                addr: sin_addr(ifa.ifa_addr),
                netmask: (!ifa.ifa_netmask.is_null()).then(|| sin_addr(ifa.ifa_netmask)),
            }
        };
        if !f(&entry) {
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
}

/// # Safety
/// `sa` must point at a valid `sockaddr_in`.
unsafe fn sin_addr(sa: *const libc::sockaddr) -> Ipv4Addr {
    // SAFETY: guaranteed by the caller.
    let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
}

/// The name of the interface that carries `ip`, if any (getifaddrs(3)).
pub fn interface_of(ip: Ipv4Addr) -> Option<String> {
    let mut found = None;
    walk_ipv4(|a| {
        if a.addr == ip {
            found = Some(a.name.to_string_lossy().into_owned());
        }
        found.is_none()
    });
    found
}

/// The subnets connected to interface `name`, host bits cleared.
pub fn connected_subnets(name: &str) -> Vec<Ipv4Net> {
    let mut nets = Vec::new();
    walk_ipv4(|a| {
        if a.name.to_bytes() == name.as_bytes() {
            let prefix = a.netmask.map_or(32, |m| u32::from(m).leading_ones() as u8);
            if let Ok(n) = Ipv4Net::new(a.addr, prefix) {
                nets.push(n.trunc());
            }
        }
        true
    });
    // Sorted and without repeats (two addresses in one subnet): views taken at different times
    // compare equal when the subnets are.
    nets.sort_unstable();
    nets.dedup();
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found() {
        assert_eq!(interface_of(Ipv4Addr::LOCALHOST).as_deref(), Some("lo"));
        assert_eq!(interface_of(Ipv4Addr::new(192, 0, 2, 251)), None);
        assert!(connected_subnets("lo").contains(&"127.0.0.0/8".parse().unwrap()));
        assert!(connected_subnets("no-such-if").is_empty());
    }
}
