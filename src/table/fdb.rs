//! Forwarding database: inner destination MAC → remote VTEP's underlay address, as
//! `bridge fdb append <mac> dev flannel.1 dst <ip>` installs it in the kernel.
use super::SnapshotMap;
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

pub type Fdb = SnapshotMap<MacAddr, Ipv4Addr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_after_updates() {
        let fdb = Fdb::default();
        let m = MacAddr([2, 0, 0, 0, 0, 2]);
        assert!(fdb.load().get(&m).is_none());
        fdb.insert(m, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(fdb.load().get(&m), Some(&Ipv4Addr::new(192, 0, 2, 2)));
        fdb.insert(m, Ipv4Addr::new(192, 0, 2, 3));
        assert_eq!(fdb.load().get(&m), Some(&Ipv4Addr::new(192, 0, 2, 3)));
        fdb.remove(&m);
        assert!(fdb.is_empty());
    }
}
