//! The `vtepd` command line. Only argument handling lives here; the work is in the library.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vtepd::control::api::client;
use vtepd::control::api::proto::{self, ProtoError, Request};
use vtepd::control::config::Config;
use vtepd::control::run::{self, RunOptions};

#[derive(Parser)]
#[command(name = "vtepd", version, about = "Userspace VXLAN/IPIP overlay switch, interoperable with flannel.1")]
struct Cli {
    /// Log level (off, error, warn, info, debug, trace), or tracing directives whose every level is
    /// one of those (e.g. `warn,vtepd=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_parser = log_filter)]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forward in the foreground until SIGINT/SIGTERM, then clean up and print counters.
    Run {
        /// The config file (TOML; config/vxlan.toml, ipip.toml, host-gw.toml and etcd.toml document every key).
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads, each with its own TAP queue and sockets [default: number of cores].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
        /// Packets per syscall batch (1 = the packet-per-syscall design, for comparison).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
        batch: u16,
        /// Disable TAP and UDP offloads (TSO/GSO/GRO).
        #[arg(long)]
        no_offload: bool,
        /// Do not ask the TAP/TUN for USO (UDP segmentation offload), as on kernels before 6.2 that
        /// lack it: the kernel then cuts UDP_SEGMENT sends before vtepd sees them, and vtepd cuts
        /// any it receives whole.
        #[arg(long)]
        no_uso: bool,
        /// UDP source ports (send sockets, shared by the workers); a flow's is chosen by its
        /// inner-flow hash.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        source_ports: u16,
        /// After set-up, run as this user, keeping only CAP_NET_ADMIN and CAP_NET_RAW.
        #[arg(long, value_parser = existing_user)]
        user: Option<String>,
        /// Keep polling this many microseconds after each packet instead of sleeping (yielding
        /// to other work meanwhile); lowers round-trip latency at the cost of CPU. 0 turns it off.
        #[arg(long, value_name = "USECS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        busy_poll: u32,
        /// Control socket to serve [default: control_socket from the config, else /run/vtepd/<device>.sock, or /run/vtepd/netns/<name>/<device>.sock in a named network namespace].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Serve Prometheus metrics (counters, table sizes, datastore state) on ADDR, e.g. 127.0.0.1:9476.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// The running vtepd's forwarding database (MAC → remote VTEP), like `bridge fdb`.
    Fdb {
        #[command(subcommand)]
        op: FdbOp,
    },
    /// The running vtepd's neighbour table (VTEP address → MAC), like `ip neigh`.
    Neigh {
        #[command(subcommand)]
        op: NeighOp,
    },
    /// The running vtepd's routes to peers' subnets, like `ip route`.
    Route {
        #[command(subcommand)]
        op: RouteOp,
    },
    /// Each peer: backend mode, whether it is reachable, when it was last heard from.
    Peers(Conn),
    /// Every counter of the running vtepd, table sizes and datastore state.
    Stats(Conn),
    /// Subnet leases in the etcd datastore (etcd mode only).
    Leases(Conn),
    /// Validate a config file without touching the system; exit 0 if good, 2 if not.
    Check {
        /// The config file to validate.
        #[arg(long, short)]
        config: PathBuf,
    },
}

// How to reach a running vtepd and how to print its answer. (A plain comment: a doc comment here
// would become the description of every subcommand that takes only these options.)
#[derive(Args)]
struct Conn {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The vtepd's control socket [default: the only socket in /run/vtepd, or in /run/vtepd/netns/<name> in a named network namespace].
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FdbOp {
    /// Print every FDB entry (from the config, the datastore or `fdb add`), like `bridge fdb show`.
    Show(Conn),
    /// `vtepd fdb add MAC dst IP`: frames to MAC go to the VTEP at IP.
    Add {
        /// The unicast MAC address of a remote endpoint, e.g. 02:00:00:00:00:99.
        #[arg(value_name = "MAC")]
        mac: String,
        /// The word `dst`, as in `bridge fdb add`.
        #[arg(value_name = "dst", value_parser = ["dst"], hide_possible_values = true)]
        _kw: String,
        /// The underlay address of the VTEP that frames to MAC are sent to.
        #[arg(value_name = "IP")]
        dst: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// `vtepd fdb del MAC`: removes a manual entry.
    Del {
        /// The MAC address of the manual entry to remove.
        #[arg(value_name = "MAC")]
        mac: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum NeighOp {
    /// Print every neighbour entry (from the config, the datastore or `neigh add`), like `ip neigh show`.
    Show(Conn),
    /// `vtepd neigh add IP lladdr MAC`: vtepd answers ARP for IP with MAC.
    Add {
        /// The overlay IPv4 address to answer ARP requests for.
        #[arg(value_name = "IP")]
        ip: String,
        /// The word `lladdr`, as in `ip neigh add`.
        #[arg(value_name = "lladdr", value_parser = ["lladdr"], hide_possible_values = true)]
        _kw: String,
        /// The unicast MAC address to answer with, e.g. 02:00:00:00:00:99.
        #[arg(value_name = "MAC")]
        mac: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// `vtepd neigh del IP`: removes a manual entry.
    Del {
        /// The IPv4 address of the manual entry to remove.
        #[arg(value_name = "IP")]
        ip: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum RouteOp {
    /// Print the routes vtepd installed to peers' subnets, like `ip route show`.
    Show(Conn),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(&cli.log_level);
    match cli.cmd {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({} peers, {})", config.display(), c.peers.len(), backend_summary(&c));
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, &e),
        },
        Cmd::Run { config, workers, batch, no_offload, no_uso, source_ports, user, busy_poll, socket, metrics } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(2, &e),
            };
            let opts = RunOptions {
                workers: workers.map_or_else(default_workers, usize::from),
                batch: batch.into(),
                offload: !no_offload,
                uso: !no_uso,
                source_ports: source_ports.into(),
                user,
                busy_poll: std::time::Duration::from_micros(busy_poll.into()),
                socket,
                metrics,
            };
            run_daemon(&cfg, &opts, &config)
        }
        Cmd::Fdb { op } => match op {
            FdbOp::Show(c) => control(&c, Ok(Request::FdbShow)),
            FdbOp::Add { mac, dst, conn, .. } => {
                control(&conn, mac_arg("MAC", &mac).and_then(|mac| Ok(Request::FdbAdd { mac, dst: ip_arg("IP", &dst)? })))
            }
            FdbOp::Del { mac, conn } => control(&conn, mac_arg("MAC", &mac).map(|mac| Request::FdbDel { mac })),
        },
        Cmd::Neigh { op } => match op {
            NeighOp::Show(c) => control(&c, Ok(Request::NeighShow)),
            NeighOp::Add { ip, mac, conn, .. } => {
                control(&conn, ip_arg("IP", &ip).and_then(|ip| Ok(Request::NeighAdd { ip, mac: mac_arg("MAC", &mac)? })))
            }
            NeighOp::Del { ip, conn } => control(&conn, ip_arg("IP", &ip).map(|ip| Request::NeighDel { ip })),
        },
        Cmd::Route { op: RouteOp::Show(c) } => control(&c, Ok(Request::RouteShow)),
        Cmd::Peers(c) => control(&c, Ok(Request::Peers)),
        Cmd::Stats(c) => control(&c, Ok(Request::Stats)),
        Cmd::Leases(c) => control(&c, Ok(Request::Leases)),
    }
}

/// Asks the running vtepd; exit 2 for a bad argument, 1 if vtepd cannot be reached or refuses.
fn control(conn: &Conn, req: Result<Request, String>) -> ExitCode {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vtepd: {e}");
            return ExitCode::from(2);
        }
    };
    match client::ask(conn.socket.as_deref(), &req, conn.json) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn arg_error(name: &str, e: ProtoError) -> String {
    match e {
        ProtoError::Invalid { problem, .. } => format!("argument {name}: {problem}"),
        other => format!("argument {name}: {other}"),
    }
}

fn mac_arg(name: &str, s: &str) -> Result<vtepd::wire::MacAddr, String> {
    proto::unicast_mac("mac", s).map_err(|e| arg_error(name, e))
}

fn ip_arg(name: &str, s: &str) -> Result<std::net::Ipv4Addr, String> {
    proto::unicast_ip("ip", s).map_err(|e| arg_error(name, e))
}

fn run_daemon(cfg: &Config, opts: &RunOptions, path: &std::path::Path) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let flags = [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGHUP, &reload),
    ];
    for (sig, flag) in flags {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            return fail(1, &e);
        }
    }
    let reload_config = Box::new(|| Config::load(path));
    match run::run(cfg, opts, stop, reload, reload_config) {
        Ok(counters) => {
            for (name, value) in counters {
                println!("{name} {value}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

/// The levels `--log-level` takes, alone or after `target=` in a directive.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Validates `--log-level`. Tracing's filter syntax reads a bare word that is no level as a target
/// name (`bogus` = "everything from a module named bogus"), which would silently log nothing, so
/// every directive must end in a level; directives with span filters (`[...]`) are left to tracing.
fn log_filter(s: &str) -> Result<String, String> {
    for directive in s.split(',') {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !directive.contains('[') && !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("'{directive}' is not a level ({}) or a directive like vtepd=debug", LOG_LEVELS.join(", ")));
        }
    }
    tracing_subscriber::EnvFilter::builder().parse(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// Validates `--user` while the arguments are read, before any device or socket exists, so a
/// misspelt name costs nothing to fix; the switch itself happens after set-up.
fn existing_user(s: &str) -> Result<String, String> {
    vtepd::io::privilege::lookup(s).map(|_| s.to_string()).map_err(|_| "no such user".to_string())
}

fn backend_summary(c: &Config) -> String {
    use vtepd::control::config::Backend;
    if let Some(e) = &c.etcd {
        return format!("etcd mode: subnet, backend and peers from {} under {}", e.endpoints.join(","), e.prefix);
    }
    let direct = if c.direct_routing() && c.node.backend != Backend::HostGw { ", direct routing" } else { "" };
    match c.node.backend {
        Backend::Vxlan => format!("vxlan, vni {}, device {}{direct}", c.vxlan.vni, c.vxlan.device),
        Backend::Ipip => format!("ipip, device {}{direct}", c.ipip.device),
        Backend::HostGw => "host-gw".to_string(),
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn fail(code: u8, e: &dyn std::error::Error) -> ExitCode {
    eprintln!("vtepd: {}", vtepd::error_chain(e));
    ExitCode::from(code)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour()).with_target(false).init();
}

/// Colour only for a person at a terminal: journald and log files would keep the escape codes as
/// text. NO_COLOR set to anything but "" turns it off there too (https://no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every (sub)command with its path, e.g. `vtepd fdb show`.
    fn all_commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let p = format!("{path} {}", sub.get_name());
            all_commands(sub, p.clone(), out);
            out.push((p, sub.clone()));
        }
    }

    #[test]
    fn log_level_takes_levels_and_directives_only() {
        for good in ["info", "DEBUG", "off", "warn,vtepd=debug", "vtepd::control=trace", "vtepd[run]=debug"] {
            assert_eq!(log_filter(good).as_deref(), Ok(good));
        }
        for bad in ["bogus", "", "info,", "vtepd=loud", "vtepd"] {
            assert!(log_filter(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn user_is_looked_up_while_parsing() {
        assert_eq!(existing_user("root").as_deref(), Ok("root"));
        let parsed = Cli::try_parse_from(["vtepd", "run", "-c", "x.toml", "--user", "fxc-no-such-user"]);
        let e = parsed.err().expect("an unknown --user is refused while parsing").to_string();
        assert!(e.contains("--user") && e.contains("no such user"), "{e}");
    }

    #[test]
    fn every_subcommand_and_argument_is_described_once() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut cmds = Vec::new();
        all_commands(&cli, "vtepd".into(), &mut cmds);
        let mut seen = std::collections::HashMap::new();
        for (path, cmd) in &cmds {
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "`{path}` has no description");
            if let Some(other) = seen.insert(about.clone(), path.clone()) {
                panic!("`{path}` and `{other}` share the description `{about}`");
            }
            for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.is_empty(), "`{path}` argument {} has no description", arg.get_id());
                // clap appends `[default: …]` itself; saying it in the text too prints it twice.
                if !arg.get_default_values().is_empty() {
                    assert!(!help.contains("[default:"), "`{path}` --{}: the default is printed twice: {help}", arg.get_id());
                }
            }
        }
    }
}
