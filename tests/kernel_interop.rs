//! vtepd on host A against the kernel's VXLAN device on host B, configured exactly as Flannel configures
//! flannel.1. Ping and 50 MB TCP both ways; once with default offloads (over veth the kernel peer hands
//! over inner TCP with partial checksums) and once with tx checksum offload off on the underlay, as on a
//! real NIC.

mod common;


use common::*;


fn interop(tag: &str, tx_csum_off: bool) {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new(tag);
    if tx_csum_off {
        for ns in [&hosts.a, &hosts.b] {
            ns.exec_ok("ethtool", &["-K", UNDERLAY_DEV, "tx", "off"]);
        }
    }
    flannel_kernel_vtep(&hosts.b);

    let dir = TempDir::new(tag);
    let cfg_a = NodeCfg::host(1, &[2]);
    let path_a = dir.write("a.toml", &cfg_a.to_toml());
    let vtepd_a = Vtepd::start(&hosts.a, &path_a, &cfg_a);

    hosts.ping_both_ways();

    hosts.tcp_both_ways(BIG_TRANSFER);

    let counters = vtepd_a.stop();
    eprintln!("A counters ({tag}):\n{}", show_counters(&counters));
    assert_clean_traffic("A", &counters);
    assert_cleaned_up(&hosts.a, &cfg_a);
}

#[test]
fn kernel_interop_default_offloads() {
    interop("kio", false);
}

#[test]
fn kernel_interop_tx_csum_off() {
    interop("kic", true);
}
