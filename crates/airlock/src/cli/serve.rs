//! `airlock serve`: the daemon. Speaks the Deno Sandbox protocol so the
//! official SDKs work against it unchanged.

use crate::{agent_exe, sandbox_env};
use anyhow::{Context, Result};
use clap::Args;
use manager::{Manager, ManagerConfig};
use server::{AppState, ConfigLimits};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::signal::unix::{signal, SignalKind};

/// The documented default port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Image sandboxes start from (built on first use).
    #[arg(long, default_value = "default")]
    image: String,
    /// No sandbox lives longer than this.
    #[arg(long, default_value = "30m", value_parser = jail::parse_duration)]
    max_lifetime: Duration,
    /// Size of each sandbox's writable disk layer.
    #[arg(long, default_value = "2G", value_parser = jail::parse_size)]
    disk: u64,
    /// CPU quota of each sandbox, in cores.
    #[arg(long, default_value_t = 2.0)]
    cpus: f64,
    /// Maximum processes and threads per sandbox.
    #[arg(long, default_value_t = 1024)]
    pids: u64,
    /// How sandboxes are isolated: `native` (namespaces, seccomp, Landlock
    /// on the host kernel) or `gvisor` (gVisor's user-space kernel between
    /// sandbox code and the host kernel; needs runsc).
    #[arg(long, env = "AIRLOCK_ISOLATION", default_value = "native", value_parser = super::isolation::parse)]
    pub isolation: manager::Isolation,
    /// Ready sandboxes kept warm so creates return at once (0 disables).
    #[arg(long, default_value_t = 2)]
    pool: usize,
    /// Concurrent sandboxes one token may hold.
    #[arg(long, default_value_t = 100)]
    max_sandboxes_per_token: usize,
    /// Sum of memory limits one token may hold (e.g. 128G).
    #[arg(long, default_value = "128G", value_parser = jail::parse_size)]
    max_memory_per_token: u64,
    /// Concurrent sandboxes on this host.
    #[arg(long, default_value_t = 1000)]
    max_sandboxes: usize,
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive HTTP connection stays open. (Established WebSockets have
    /// no idle timeout: the SDKs keep one open while they hold a sandbox.)
    #[arg(long, default_value = "10s", value_parser = jail::parse_duration)]
    header_timeout: Duration,
    /// HTTP connections one client IP address (an IPv6 /64) may hold at
    /// once (0: no limit); more are answered 429. Upgraded WebSockets do
    /// not count: they are authenticated and bounded by token quotas.
    #[arg(long, default_value_t = server::listen::DEFAULT_PER_ADDRESS)]
    max_connections_per_ip: usize,
    /// Also serve `/metrics` without a token on this address (bind it to a
    /// private interface). On the API address `/metrics` needs a token.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Memory promised to sandboxes (the sum of their limits) may reach this
    /// multiple of the host's RAM. Limits are ceilings, and most sandboxes
    /// use a fraction of theirs.
    #[arg(long, default_value_t = 4.0)]
    memory_overcommit: f64,
    /// Answer NAME with IP for sandbox connections instead of asking the
    /// system resolver (repeatable; NAME may be `*.suffix`). Overrides are
    /// trusted: they may point at loopback, private or the host's own
    /// addresses, which the gateway otherwise refuses to dial (never at
    /// the daemon's own listeners).
    #[arg(long = "resolve", value_name = "NAME=IP", value_parser = parse_resolve)]
    resolve: Vec<(String, IpAddr)>,
    /// Let sandboxes reach internal addresses in this range (repeatable;
    /// e.g. 10.20.0.0/16, 169.254.169.254/32, fd00:1::/64). Without one a
    /// sandbox reaches only public addresses, whatever its allowNet names:
    /// private, loopback, link-local (cloud metadata), CGNAT and other
    /// non-public destinations are refused. The host's own addresses and
    /// the daemon's are never reachable this way (use --resolve).
    #[arg(long = "egress-allow-cidr", value_name = "CIDR", value_parser = egress::resolve::parse_cidr)]
    egress_allow_cidr: Vec<egress::resolve::IpNet>,
    /// Also trust the CA certificates in this PEM file when the gateway
    /// verifies an upstream it intercepts for secrets (repeatable; the
    /// host's system store is always used).
    #[arg(long = "upstream-ca", value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,
    /// Where exposed sandbox ports (`exposeHttp`) are served over HTTPS, or
    /// `off`. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR|off", default_value = DEFAULT_EXPOSE_LISTEN, value_parser = parse_expose_listen)]
    expose_listen: Listen,
    /// Exposed ports get names `<random>.<this domain>`; point a wildcard
    /// DNS record for it at this host (`*.localhost` names need none).
    #[arg(long, default_value = expose::DEFAULT_BASE_DOMAIN)]
    expose_domain: String,
    /// The port clients use to reach the expose address (behind a port
    /// forward or load balancer); default: the port listened on. It is part
    /// of the returned URLs unless it is 443.
    #[arg(long, value_name = "PORT")]
    expose_public_port: Option<u16>,
    /// Serve exposed domains with this certificate chain (PEM; it must cover
    /// `*.<expose domain>`) instead of one from the daemon's own CA, which
    /// is kept as `expose-ca.pem` beside the store.
    #[arg(long, value_name = "FILE", requires = "expose_key")]
    expose_cert: Option<PathBuf>,
    /// The private key of `--expose-cert` (PEM).
    #[arg(long, value_name = "FILE", requires = "expose_cert")]
    expose_key: Option<PathBuf>,
    /// Memory the egress gateway may hold in the daemon for one sandbox's
    /// connections (their buffers; e.g. 64M). A connection that does not
    /// fit is refused; a stream slows down rather than buffer past it.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_gateway_memory)]
    egress_memory_per_sandbox: u64,
    /// Size of the storage pool that holds every volume (a sparse file
    /// under the data dir, capped at 90% of its disk's free space when
    /// first made): the most all volumes' capacities may add up to.
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = jail::parse_size)]
    volume_pool: u64,
    /// Volumes one token may hold.
    #[arg(long, default_value_t = 50)]
    max_volumes_per_token: u64,
    /// Bytes of volume capacity one token may reserve.
    #[arg(long, value_name = "SIZE", default_value = "200G", value_parser = jail::parse_size)]
    max_volume_bytes_per_token: u64,
    /// Serve no volumes (their API answers 501).
    #[arg(long)]
    no_volumes: bool,
    /// Where the SSH gateway listens (`ssh USERNAME@HOST`, usernames from
    /// `expose/ssh`), or `off`; port 0 picks a free port. Default
    /// 127.0.0.1:2222 (skipped with a warning when that port is taken).
    /// The JS SDK assumes port 22: see docs/operations.md for serving it
    /// there.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_ssh_listen)]
    ssh_listen: Option<Listen>,
    /// The host name `expose/ssh` tells clients; default: the host name the
    /// API request was sent to.
    #[arg(long, value_name = "NAME")]
    ssh_hostname: Option<String>,
    /// The port `expose/ssh` tells clients (behind a port forward such as
    /// 22 → 2222); default: the port listened on.
    #[arg(long, value_name = "PORT")]
    ssh_public_port: Option<u16>,
    /// How often volumes and snapshots are billed (byte-hours); hidden:
    /// tests shorten it, nothing else needs to (a crash loses nothing).
    #[arg(long, hide = true, value_name = "DURATION", default_value = "10s", value_parser = parse_meter_interval)]
    storage_meter_interval: Duration,
}

/// `--storage-meter-interval`: a zero interval would spin.
fn parse_meter_interval(s: &str) -> Result<Duration, String> {
    let d = jail::parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?}: at least 10ms"));
    }
    Ok(d)
}

/// The least `--egress-memory-per-sandbox`: a few connections' worth.
const MIN_GATEWAY_MEMORY: u64 = 4 << 20;

fn parse_gateway_memory(s: &str) -> Result<u64, String> {
    let n = jail::parse_size(s)?;
    if n < MIN_GATEWAY_MEMORY {
        return Err(format!(
            "{s:?}: at least {}M, enough for a few connections",
            MIN_GATEWAY_MEMORY >> 20
        ));
    }
    Ok(n)
}

/// The documented default address for exposed ports.
pub const DEFAULT_EXPOSE_LISTEN: &str = "127.0.0.1:8443";

#[derive(Debug, Clone, Copy)]
enum Listen {
    Off,
    At(SocketAddr),
}

fn parse_expose_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::At)
        .map_err(|_| format!("{s:?}: expected an address like 0.0.0.0:443, or off"))
}

/// The SSH gateway's address when `--ssh-listen` is not given.
pub const DEFAULT_SSH_LISTEN: &str = "127.0.0.1:2222";

fn parse_ssh_listen(s: &str) -> Result<Listen, String> {
    parse_expose_listen(s)
        .map_err(|_| format!("{s:?}: expected an address like 0.0.0.0:22, or off"))
}

fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (name, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=IP, e.g. api.internal=10.0.0.5"))?;
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty()
        || !bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!("{s:?}: {name:?} is not a host name"));
    }
    Ok((name.to_ascii_lowercase(), ip))
}

/// MemTotal from /proc/meminfo, MiB.
fn host_memory_mb() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kib / 1024)
}

pub fn main(data_dir: &Path, store_path: &Path, args: ServeArgs) -> Result<i32> {
    raise_open_files_limit();
    // Before any thread starts: the gateway's charges follow pages touched.
    egress::budget::tune_allocator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(data_dir, store_path, args))
}

async fn serve(data_dir: &Path, store_path: &Path, args: ServeArgs) -> Result<i32> {
    let store = Arc::new(
        Store::open(store_path)
            .with_context(|| format!("opening the store {}", store_path.display()))?,
    );
    let first_token = if store.token_count()? == 0 {
        Some(store.create_token("default")?)
    } else {
        None
    };
    // Bound first: the gateway must know the daemon's own addresses to keep
    // sandboxes away from them.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics"))?,
        ),
        None => None,
    };
    let expose_listener =
        match args.expose_listen {
            Listen::Off => None,
            Listen::At(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| {
                format!("listening on {a} for exposed ports (--expose-listen)")
            })?),
        };
    let ssh_listener = bind_ssh(args.ssh_listen).await?;
    let mut protected = vec![addr];
    if let Some(s) = &ssh_listener {
        protected.push(s.local_addr()?);
    }
    if let Some(m) = &metrics_listener {
        protected.push(m.local_addr()?);
    }
    if let Some(e) = &expose_listener {
        protected.push(e.local_addr()?);
    }
    let mut overrides: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (name, ip) in &args.resolve {
        overrides.entry(name.clone()).or_default().push(*ip);
    }
    let upstream_tls = egress::intercept::ca::UpstreamTls::new(&args.upstream_ca)
        .context("loading the CAs for upstream TLS (--upstream-ca)")?;
    let network = manager::NetworkConfig {
        link: manager::LinkSpec::default(),
        resolver: Arc::new(
            egress::Resolver::new(overrides, protected)
                .with_allowed(args.egress_allow_cidr.clone()),
        ),
        upstream_tls: Arc::new(upstream_tls),
        shards: Arc::new(
            egress::Shards::start(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .context("starting the egress gateway threads")?,
        ),
        memory_per_sandbox: usize::try_from(args.egress_memory_per_sandbox).unwrap_or(usize::MAX),
        memory: Arc::default(),
    };
    // Beside the store: volume data belongs with the records that say
    // whose it is (the default store is DATA_DIR/airlock.db, so this is
    // DATA_DIR/storage). Two daemons with different stores never share
    // it, so neither takes the other's volumes for orphans.
    let storage_dir = store_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(data_dir)
        .join("storage");
    let cfg = ManagerConfig {
        data_dir: data_dir.to_path_buf(),
        image: args.image.clone(),
        agent_exe: agent_exe::locate()?,
        max_lifetime: args.max_lifetime,
        disk_bytes: args.disk,
        cpu_millis: (args.cpus * 1000.0).round() as u64,
        pids: args.pids,
        env: sandbox_env::agent_env(sandbox_env::WORKDIR, None),
        pool_size: args.pool,
        admission: manager::AdmissionLimits {
            per_token_sandboxes: args.max_sandboxes_per_token,
            per_token_memory_mb: args.max_memory_per_token >> 20,
            host_sandboxes: args.max_sandboxes,
            host_memory_mb: (host_memory_mb()? as f64 * args.memory_overcommit) as u64,
        },
        default_memory_mb: ConfigLimits::default().default_memory_mb,
        network: Some(network),
        storage: (!args.no_volumes).then(|| manager::StorageConfig {
            pool_bytes: args.volume_pool,
            per_token_volumes: args.max_volumes_per_token,
            per_token_bytes: args.max_volume_bytes_per_token,
            ..manager::StorageConfig::new(storage_dir.clone())
        }),
        storage_meter_interval: args.storage_meter_interval,
    };
    eprintln!(
        "airlock: preparing image {:?} (built on first use)...",
        args.image
    );
    let (backends, isolation) = super::isolation::daemon_backends(args.isolation, &[storage_dir])?;
    eprintln!("airlock: isolation {isolation} (the default; tokens may pin another)");
    let manager = Manager::start(cfg, store.clone(), backends).await?;
    let limits = ConfigLimits {
        max_lifetime: args.max_lifetime,
        ..ConfigLimits::default()
    };
    let exposure = match expose_listener {
        Some(listener) => Some(start_expose(&args, store_path, listener)?),
        None => None,
    };
    let ssh = match ssh_listener {
        Some(listener) => Some(start_ssh(&args, store_path, &manager, listener)?),
        None => None,
    };
    let state = AppState::new(manager.clone(), store.clone(), limits, exposure, ssh);
    let url = format!("http://{addr}");
    if let Some(token) = first_token {
        println!(
            "created the first access token ({}); use it with the Deno Sandbox SDKs:",
            token.id
        );
        println!("export DENO_DEPLOY_TOKEN={}", token.secret);
        println!("export DENO_SANDBOX_ENDPOINT={url}");
        println!("export DENO_DEPLOY_ENDPOINT={url}");
    } else {
        println!("use a token from `airlock token create` as DENO_DEPLOY_TOKEN, and:");
        println!("export DENO_SANDBOX_ENDPOINT={url}");
        println!("export DENO_DEPLOY_ENDPOINT={url}");
    }
    let conn_limits = server::listen::ConnLimits {
        header_timeout: args.header_timeout,
        per_address: args.max_connections_per_ip,
    };
    if let Some(metrics) = metrics_listener {
        println!("metrics on http://{}/metrics", metrics.local_addr()?);
        let router = server::metrics_router(state.clone());
        tokio::spawn(server::listen::serve(
            metrics,
            router,
            conn_limits,
            std::future::pending(),
        ));
    }
    println!("listening on {url}");
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    server::listen::serve(listener, server::router(state), conn_limits, shutdown).await;
    eprintln!(
        "airlock: shutting down; ending {} sandbox(es)",
        manager.live_count()
    );
    manager.shutdown().await;
    Ok(0)
}

/// Loads the exposed-HTTP identity and starts the HTTPS ingress on
/// `listener` (it stops with the process).
fn start_expose(
    args: &ServeArgs,
    store_path: &Path,
    listener: tokio::net::TcpListener,
) -> Result<Arc<server::expose::Exposure>> {
    let bound = listener.local_addr()?;
    let certs = match (&args.expose_cert, &args.expose_key) {
        (Some(cert), Some(key)) => expose::ExposeCerts::from_files(cert, key, &args.expose_domain)
            .context("loading --expose-cert/--expose-key")?,
        _ => {
            // Beside the store: one CA per daemon state, kept across restarts
            // so users trust it once.
            let dir = store_path.parent().unwrap_or(Path::new("."));
            expose::ExposeCerts::load_or_create(dir, &args.expose_domain)
                .with_context(|| format!("loading or making the expose CA in {}", dir.display()))?
        }
    };
    let public_port = args.expose_public_port.unwrap_or(bound.port());
    let router =
        Arc::new(expose::Router::new(&args.expose_domain, public_port).context("--expose-domain")?);
    let ingress = expose::Ingress::new(
        router.clone(),
        certs.server_config(),
        expose::ServeOptions::default(),
    );
    let metrics = ingress.metrics();
    let port_part = if public_port == 443 {
        String::new()
    } else {
        format!(":{public_port}")
    };
    match certs.ca_cert_path() {
        Some(ca) => println!(
            "exposed ports on https://*.{}{port_part} (listening on {bound}; CA {})",
            certs.base_domain(),
            ca.display()
        ),
        None => println!(
            "exposed ports on https://*.{}{port_part} (listening on {bound})",
            certs.base_domain()
        ),
    }
    let ca_path = certs.ca_cert_path().map(Path::to_path_buf);
    tokio::spawn(ingress.serve(listener, std::future::pending()));
    Ok(Arc::new(server::expose::Exposure::new(
        router, metrics, ca_path,
    )))
}

/// Binds `--ssh-listen`. Its default address is a convenience, so a port
/// already taken there (another daemon on this host) only warns; an
/// address asked for must be had.
async fn bind_ssh(listen: Option<Listen>) -> Result<Option<tokio::net::TcpListener>> {
    match listen {
        Some(Listen::Off) => Ok(None),
        Some(Listen::At(a)) => {
            Ok(Some(tokio::net::TcpListener::bind(a).await.with_context(
                || format!("listening on {a} for SSH (--ssh-listen)"),
            )?))
        }
        None => match tokio::net::TcpListener::bind(DEFAULT_SSH_LISTEN).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                eprintln!(
                    "airlock: SSH is off: cannot listen on {DEFAULT_SSH_LISTEN} ({e}); \
                     pass --ssh-listen ADDR"
                );
                Ok(None)
            }
        },
    }
}

/// Loads (or makes) the host key beside the store and starts the SSH
/// gateway on `listener` (it stops with the process).
fn start_ssh(
    args: &ServeArgs,
    store_path: &Path,
    manager: &Arc<Manager>,
    listener: tokio::net::TcpListener,
) -> Result<Arc<ssh::Gateway>> {
    let bound = listener.local_addr()?;
    // Beside the store, like the expose CA: one identity per daemon state.
    let key_path = store_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("ssh_host_ed25519_key");
    let key = ssh::hostkey::load_or_create(&key_path).context("the SSH host key")?;
    let gateway = ssh::Gateway::new(
        manager.clone(),
        key,
        ssh::Advertised {
            hostname: args.ssh_hostname.clone(),
            port: args.ssh_public_port.unwrap_or(bound.port()),
        },
    );
    println!("ssh on {bound} (host key {})", key_path.display());
    tokio::spawn(gateway.clone().serve(listener));
    Ok(gateway)
}

pub fn default_store(data_dir: &Path) -> PathBuf {
    data_dir.join("airlock.db")
}

/// The daemon holds several fds per sandbox and one per connection through
/// the egress gateway: lift the soft RLIMIT_NOFILE (often 1024) to the hard
/// limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the open files limit to {hard}: {e}");
            }
        }
    }
}
