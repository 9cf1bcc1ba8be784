//! Route table lookups, as the IPIP encapsulator does one per packet.
//!
//! Tables shaped like real overlays: 1000 Calico /26 blocks (one prefix length, one probe), and the
//! same plus a /16 pool route and 50 /32 borrowed addresses (three lengths, up to three probes).
//! Each iteration looks up a batch of 64 destinations, as a worker does per batch.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use vtepd::table::Lpm;

fn blocks(n: u32) -> Lpm<Ipv4Addr> {
    let mut t = Lpm::default();
    for i in 0..n {
        let net = Ipv4Net::new(Ipv4Addr::from(0x0af4_0000 + i * 64), 26).unwrap();
        t.insert(net, Ipv4Addr::from(0xc000_0200 + i));
    }
    t
}

fn destinations(seed: u32) -> Vec<Ipv4Addr> {
    let mut x = seed | 1;
    (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            Ipv4Addr::from(0x0af4_0000 + x % (1000 * 64))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let one_len = blocks(1000);
    let mut three_len = blocks(1000);
    three_len.insert("10.244.0.0/16".parse().unwrap(), Ipv4Addr::new(192, 0, 2, 254));
    for i in 0..50u32 {
        three_len.insert(Ipv4Net::new(Ipv4Addr::from(0x0af4_0000 + i * 977), 32).unwrap(), Ipv4Addr::new(192, 0, 2, 9));
    }
    let dsts = destinations(0x1234_5678);
    let misses: Vec<Ipv4Addr> = dsts.iter().map(|a| Ipv4Addr::from(u32::from(*a) ^ 0x0100_0000)).collect();

    let mut g = c.benchmark_group("route_lookup_x64");
    g.throughput(Throughput::Elements(64));
    for (name, table, addrs) in
        [("1000x/26 hit", &one_len, &dsts), ("1000x/26+/16+/32 hit", &three_len, &dsts), ("1000x/26 miss", &one_len, &misses)]
    {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0u32;
                for a in addrs.iter() {
                    n += table.lookup(black_box(*a)).map_or(0, |ip| u32::from(ip) & 1);
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
