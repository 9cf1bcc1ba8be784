//! Multi-queue TUN devices (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE) for the IPIP
//! backend: like Calico's `tunl0`, but the tunnel endpoint is vtepd rather than the kernel.
//!
//! A TUN queue is a TAP queue without the Ethernet header, so opening, the vnet header size, the
//! offload mask and non-blocking I/O are all [`super::tap`]'s code; this module only picks the kind.
//! Each read returns the 12-byte vnet header followed by one IPv4 (or IPv6) packet; each write takes
//! the same. No packet-information prefix (IFF_NO_PI): the IP version nibble tells the family.
use super::tap::{self, Kind, TapError, TapQueue};

/// One queue of a TUN device; the same type as a TAP queue.
pub type TunQueue = TapQueue;

/// Creates (or attaches to) the multi-queue TUN `device` with `queues` queues, offloads off.
pub fn open(device: &str, queues: usize) -> Result<Vec<TunQueue>, TapError> {
    tap::open_kind(Kind::Tun, device, queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_name_is_refused_before_any_syscall() {
        let e = open("no/slash", 1).unwrap_err();
        assert!(matches!(e, TapError::BadName { kind: Kind::Tun, .. }));
        assert!(e.to_string().starts_with("TUN device name"), "{e}");
    }
}
