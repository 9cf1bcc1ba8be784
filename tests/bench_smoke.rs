//! The benchmark is a product feature (issue 3), so it is run here end to end on the smallest
//! settings it accepts: rows A (raw veth), B (kernel VXLAN) and C (vtepd), 3 interleaved rounds of
//! 1 s. Checked is what it promises — exit 0, every round of every row ok, every figure present and
//! finite, ratios to kernel VXLAN on the table, the machine's syscall and hand-off costs, bench.json
//! and bench.svg written — and never how
//! fast anything was: this is not a speed test.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const ROWS: [&str; 3] = ["A", "B", "C"];

/// Figures every row reports (CPU per GB of vtepd alone only exists for vtepd rows).
const FIGURES: [&str; 11] = [
    "tcp1_gbps",
    "tcp4_gbps",
    "udp64_kpps",
    "udp64_loss_pct",
    "uso_gbps",
    "uso_loss_pct",
    "rtt_mean_us",
    "rtt_p99_us",
    "rtt_b2b_mean_us",
    "cpu_s_per_gb",
    "machine_cpu_s_per_gb",
];

#[test]
fn bench_runs_every_row_and_writes_table_json_and_svg() {
    let _heavy = heavy_lock();
    let dir = TempDir::new("bench");
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{repo}/scripts/bench.py"))
        .args(["--rows", &ROWS.join(","), "--rounds", "3", "--time", "1", "--pings", "20"])
        .args(["--vtepd", vtepd_bin(), "--out"])
        .arg(dir.path())
        .output()
        .expect("run python3 scripts/bench.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench.py exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code());

    // The terminal table: a line per figure, vtepd's with its ratio to kernel VXLAN.
    let rtt_line = stdout.lines().find(|l| l.starts_with("ping RTT back to back")).unwrap_or_else(|| panic!("no back-to-back RTT line:\n{stdout}"));
    assert!(rtt_line.contains("(x"), "no ratio to kernel VXLAN on the RTT line: {rtt_line}");
    assert!(rtt_line.contains('-') && rtt_line.contains(", "), "no per-round ratio range on the RTT line: {rtt_line}");
    assert!(stderr.contains("round 3/3"), "no progress line for the last round:\n{stderr}");

    let json = std::fs::read_to_string(dir.path().join("bench.json")).expect("bench.json written");
    let bench: Value = serde_json::from_str(&json).expect("bench.json is JSON");
    for key in ROWS {
        let row = &bench["rows"][key];
        assert_eq!(row["rounds_ok"], 3, "row {key}: not every round ok: {}", row["errors"]);
        for fig in FIGURES {
            let v = row["median"][fig].as_f64().unwrap_or_else(|| panic!("row {key}: no median {fig}: {}", row["median"]));
            assert!(v.is_finite() && v >= 0.0, "row {key}: {fig} = {v}");
        }
    }
    // Each round's own ratio to kernel VXLAN (rows of a round run back to back).
    for fig in ["tcp1_gbps", "udp64_kpps", "rtt_mean_us", "rtt_b2b_mean_us", "cpu_s_per_gb"] {
        let ratios = bench["rows"]["C"]["round_ratios_to_B"][fig].as_array().unwrap_or_else(|| panic!("no round ratios for {fig}"));
        assert_eq!(ratios.len(), 3, "{fig}: one ratio per round: {ratios:?}");
        assert!(ratios.iter().all(|r| r.as_f64().is_some_and(|r| r.is_finite() && r > 0.0)), "{fig}: {ratios:?}");
    }
    // The machine's own costs, which the ratios depend on, are reported alongside.
    let costs = &bench["machine"]["costs"];
    for key in ["syscall_us", "pipe_round_trip_us", "pipe_round_trip_one_cpu_us"] {
        let v = costs[key].as_f64().unwrap_or_else(|| panic!("machine.costs.{key} missing: {costs}"));
        assert!(v.is_finite() && v > 0.0, "machine.costs.{key} = {v}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("machine: a syscall")), "no machine-costs line:\n{stdout}");
    // How idle CPUs wait (null where a machine has no cpuidle or haltpoll), read from sysfs.
    let idle = bench["machine"]["cpuidle"].as_object().unwrap_or_else(|| panic!("no machine.cpuidle: {}", bench["machine"]));
    for key in ["driver", "governor", "guest_halt_poll_ns"] {
        assert!(idle.contains_key(key), "machine.cpuidle.{key} missing: {idle:?}");
    }
    let halts_at_once = std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns").is_ok_and(|v| v.trim() == "0");
    assert_eq!(halts_at_once, stdout.contains("idle vCPUs halt at once"), "{stdout}");
    // The transparent-huge-page mode, which vtepd's copies depend on, as sysfs has it.
    let mode = thp_mode();
    assert_eq!(bench["machine"]["thp"].as_str(), mode.as_deref(), "machine.thp: {}", bench["machine"]);
    assert_eq!(!thp_available(), stdout.contains("no transparent huge pages"), "{stdout}");
    let vtepd_cpu = bench["rows"]["C"]["median"]["daemon_cpu_s_per_gb"].as_f64();
    assert!(vtepd_cpu.is_some_and(|v| v > 0.0), "vtepd's own CPU per GB missing: {vtepd_cpu:?}");

    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).expect("bench.svg written");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "bench.svg is not SVG");
    for label in ["raw veth underlay", "kernel VXLAN", "vtepd VXLAN", "back to back"] {
        assert!(svg.contains(label), "bench.svg does not show {label:?}");
    }
}
