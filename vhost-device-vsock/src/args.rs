// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line of `vhost-device-vsock` and its validation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use vhost_device_common::cli::CommonArgs;

/// Smallest and largest per-connection receive buffer.
pub const BUFFER_RANGE: std::ops::RangeInclusive<u32> = 4096..=(16 << 20);

/// vhost-user virtio-vsock daemon: guest AF_VSOCK stream sockets whose host
/// ends are Unix sockets (the hybrid convention).
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Socket and logging options shared by every vhost-device daemon.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the vsock device.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the vsock device.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The guest's context id (3 or more); one VM, with --socket-path or --socket-fd
    #[arg(long, value_name = "CID", conflicts_with_all = ["vms", "config"])]
    pub guest_cid: Option<u64>,

    /// Unix socket for host programs: connect and write `CONNECT PORT\n` to
    /// reach guest port PORT; guest connections to CID 2 port P go to PATH_P
    #[arg(long, value_name = "PATH", conflicts_with_all = ["vms", "config"])]
    pub uds_path: Option<PathBuf>,

    /// Receive buffer per connection, in bytes: how much the guest may send
    /// ahead of a slow host reader (the credit it is given)
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    pub buffer_size: u32,

    /// How long setting up a connection may take: a host program's
    /// `CONNECT` line and the guest's answer, or the connect to a host
    /// program's socket (`500ms`, `10s`, `1m`; a bare number is seconds)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long the guest's data may wait for a slow host reader after the
    /// guest closed its socket, before the connection is dropped
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// One VM of several served by this process (repeat):
    /// `guest-cid=CID,socket=PATH,uds-path=PATH[,groups=G1+G2][,buffer-size=BYTES]`.
    /// VMs reach each other only through a group both name
    #[arg(long = "vm", value_name = "SPEC")]
    pub vms: Vec<String>,

    /// A file of VMs, one `--vm` SPEC per line (`#` starts a comment)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Forward guest stream connections to CID 2 port P to host AF_VSOCK
    /// CID:P instead of the Unix socket PATH_P (needs vhost_vsock or
    /// vsock_loopback on the host)
    #[arg(long, value_name = "CID", conflicts_with_all = ["vms", "config"])]
    pub forward_cid: Option<u32>,

    /// Listen on host AF_VSOCK ports P1+P2+… and forward each connection
    /// into the guest at the same port (needs --forward-peers)
    #[arg(long, value_name = "PORTS", conflicts_with_all = ["vms", "config"], requires = "forward_peers")]
    pub forward_listen: Option<String>,

    /// The host AF_VSOCK peers whose connections --forward-listen takes:
    /// CIDs C1+C2+…, or `any` for every VM and the host
    #[arg(long, value_name = "CIDS", requires = "forward_listen")]
    pub forward_peers: Option<String>,
}

/// A duration: `500ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (for example 500ms, 10s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("'{text}': the unit is ms, s or m")),
    };
    if d.is_zero() {
        return Err(format!("'{text}': a timeout must be longer than 0"));
    }
    Ok(d)
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Guest CID.
    pub guest_cid: u64,
    /// Host Unix socket path.
    pub uds_path: PathBuf,
    /// Per-connection receive buffer.
    pub buffer_size: u32,
    /// The vhost-user socket (multi-VM mode; `None`: from `--socket-path`/`--socket-fd`).
    pub socket: Option<PathBuf>,
    /// Sibling groups.
    pub groups: Vec<String>,
    /// Host `AF_VSOCK` CID that guest connections to the host go to.
    pub forward_cid: Option<u32>,
    /// Host `AF_VSOCK` ports forwarded into the guest.
    pub forward_listen: Vec<u32>,
    /// The host `AF_VSOCK` CIDs whose connections are forwarded (`None`:
    /// any).
    pub forward_peers: Option<Vec<u32>>,
    /// See [`DeviceArgs::connect_timeout`].
    pub connect_timeout: Duration,
    /// See [`DeviceArgs::close_timeout`].
    pub close_timeout: Duration,
}

/// Invalid options.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Reserved CID.
    #[error("--guest-cid {0} is reserved (0 to 2, and 0xffffffff); use 3 or more")]
    ReservedCid(u64),
    /// Buffer out of range.
    #[error("--buffer-size must be between {} and {} bytes", BUFFER_RANGE.start(), BUFFER_RANGE.end())]
    BufferSize,
    /// Neither a single VM nor `--vm`.
    #[error("give --guest-cid and --uds-path for one VM, or --vm/--config for several")]
    NoVm,
    /// A `--vm` spec is malformed.
    #[error("VM '{spec}': {what}")]
    BadVm {
        /// The spec.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// Two VMs share a CID.
    #[error("guest CID {0} is given to two VMs; every VM needs its own")]
    DuplicateCid(u64),
    /// Two VMs share a path.
    #[error("{0} is given to two VMs")]
    DuplicatePath(String),
    /// The config file cannot be read.
    #[error("cannot read --config {0}: {1}")]
    ConfigFile(String, String),
    /// Bad `--forward-listen`.
    #[error("--forward-listen {0}: give ports separated by '+', e.g. 7000+7001")]
    ForwardPorts(String),
    /// Bad `--forward-peers`.
    #[error("--forward-peers {0}: give CIDs separated by '+', e.g. 3+4, or 'any'")]
    ForwardPeers(String),
    /// `--socket-path` together with `--vm`.
    #[error("with --vm/--config each VM names its vhost-user socket (socket=PATH); drop --socket-path/--socket-fd")]
    SocketWithVms,
}

fn vm_spec(spec: &str, a: &DeviceArgs) -> Result<Config, ArgsError> {
    let bad = |what: String| ArgsError::BadVm {
        spec: spec.into(),
        what,
    };
    let items = vhost_device_common::cli::parse_key_values(spec).map_err(|e| bad(e.to_string()))?;
    let (mut cid, mut socket, mut uds, mut groups, mut buffer) =
        (None, None, None, Vec::new(), a.buffer_size);
    for (key, value) in items {
        let value = value.ok_or_else(|| bad(format!("'{key}' needs a value")))?;
        match key.as_str() {
            "guest-cid" => {
                cid = Some(
                    value
                        .parse::<u64>()
                        .map_err(|e| bad(format!("guest-cid: {e}")))?,
                )
            }
            "socket" => socket = Some(PathBuf::from(value)),
            "uds-path" => uds = Some(PathBuf::from(value)),
            "groups" => {
                groups = value
                    .split('+')
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            }
            "buffer-size" => {
                buffer = value
                    .parse()
                    .map_err(|e| bad(format!("buffer-size: {e}")))?
            }
            other => {
                return Err(bad(format!(
                "unknown key '{other}' (known: guest-cid, socket, uds-path, groups, buffer-size)"
            )))
            }
        }
    }
    let guest_cid = cid.ok_or_else(|| bad("guest-cid is required".into()))?;
    let config = Config {
        guest_cid,
        uds_path: uds.ok_or_else(|| bad("uds-path is required".into()))?,
        buffer_size: buffer,
        socket: Some(socket.ok_or_else(|| bad("socket is required".into()))?),
        groups,
        forward_cid: None,
        forward_listen: Vec::new(),
        forward_peers: None,
        connect_timeout: a.connect_timeout,
        close_timeout: a.close_timeout,
    };
    check(&config)?;
    Ok(config)
}

fn check(c: &Config) -> Result<(), ArgsError> {
    if c.guest_cid < 3 || c.guest_cid >= u64::from(u32::MAX) {
        return Err(ArgsError::ReservedCid(c.guest_cid));
    }
    if !BUFFER_RANGE.contains(&c.buffer_size) {
        return Err(ArgsError::BufferSize);
    }
    Ok(())
}

/// Every VM the options describe. `has_socket_option`: whether
/// `--socket-path`/`--socket-fd` was given.
pub fn vms(a: DeviceArgs, has_socket_option: bool) -> Result<Vec<Config>, ArgsError> {
    let mut specs = a.vms.clone();
    if let Some(file) = &a.config {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ArgsError::ConfigFile(file.display().to_string(), e.to_string()))?;
        specs.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if specs.is_empty() {
        return Ok(vec![Config::try_from(a)?]);
    }
    if has_socket_option {
        return Err(ArgsError::SocketWithVms);
    }
    let vms = specs
        .iter()
        .map(|s| vm_spec(s, &a))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, v) in vms.iter().enumerate() {
        for w in &vms[..i] {
            if v.guest_cid == w.guest_cid {
                return Err(ArgsError::DuplicateCid(v.guest_cid));
            }
            if v.uds_path == w.uds_path {
                return Err(ArgsError::DuplicatePath(v.uds_path.display().to_string()));
            }
            if v.socket == w.socket {
                return Err(ArgsError::DuplicatePath(format!("{:?}", v.socket)));
            }
        }
    }
    Ok(vms)
}

impl TryFrom<DeviceArgs> for Config {
    type Error = ArgsError;

    fn try_from(a: DeviceArgs) -> Result<Self, ArgsError> {
        let (Some(guest_cid), Some(uds_path)) = (a.guest_cid, a.uds_path) else {
            return Err(ArgsError::NoVm);
        };
        let forward_listen = match &a.forward_listen {
            None => Vec::new(),
            Some(ports) => ports
                .split('+')
                .map(|p| p.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ArgsError::ForwardPorts(ports.clone()))?,
        };
        let forward_peers = match a.forward_peers.as_deref().map(str::trim) {
            None | Some("any") => None,
            Some(cids) => Some(
                cids.split('+')
                    .map(|c| c.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ArgsError::ForwardPeers(cids.into()))?,
            ),
        };
        let c = Self {
            guest_cid,
            uds_path,
            buffer_size: a.buffer_size,
            socket: None,
            groups: Vec::new(),
            forward_cid: a.forward_cid,
            forward_listen,
            forward_peers,
            connect_timeout: a.connect_timeout,
            close_timeout: a.close_timeout,
        };
        check(&c)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let a = Args::try_parse_from(
            [
                "vhost-device-vsock",
                "--socket-path",
                "/tmp/s",
                "--uds-path",
                "/tmp/v",
            ]
            .iter()
            .chain(extra),
        )
        .map_err(|e| e.to_string())?;
        Config::try_from(a.device).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_cid_is_accepted() {
        assert_eq!(parse(&["--guest-cid", "3"]).unwrap().guest_cid, 3);
    }

    #[test]
    fn reserved_cids_are_refused() {
        for cid in ["0", "1", "2", "4294967295"] {
            assert!(
                parse(&["--guest-cid", cid])
                    .unwrap_err()
                    .contains("reserved"),
                "{cid}"
            );
        }
    }

    fn parse_vms(extra: &[&str]) -> Result<Vec<Config>, String> {
        let a = Args::try_parse_from(["vhost-device-vsock"].iter().chain(extra))
            .map_err(|e| e.to_string())?;
        vms(a.device, a.common.sockets().is_some()).map_err(|e| e.to_string())
    }

    #[test]
    fn several_vms_are_parsed_with_groups() {
        let v = parse_vms(&[
            "--vm",
            "guest-cid=3,socket=/a,uds-path=/ua,groups=g1+g2",
            "--vm",
            "guest-cid=4,socket=/b,uds-path=/ub",
        ])
        .unwrap();
        assert_eq!(v[0].groups, vec!["g1", "g2"]);
        assert!(v[1].groups.is_empty(), "no group unless named");
        assert_eq!(v[1].socket, Some(PathBuf::from("/b")));
    }

    #[test]
    fn duplicate_cids_are_refused() {
        let err = parse_vms(&[
            "--vm",
            "guest-cid=3,socket=/a,uds-path=/ua",
            "--vm",
            "guest-cid=3,socket=/b,uds-path=/ub",
        ])
        .unwrap_err();
        assert!(err.contains("CID 3 is given to two VMs"), "{err}");
    }

    #[test]
    fn vm_without_socket_is_refused() {
        assert!(parse_vms(&["--vm", "guest-cid=3,uds-path=/ua"])
            .unwrap_err()
            .contains("socket is required"));
    }

    #[test]
    fn config_file_lists_vms() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vms.conf");
        std::fs::write(&f, "# two VMs\nguest-cid=5,socket=/a,uds-path=/ua\n\nguest-cid=6,socket=/b,uds-path=/ub # second\n").unwrap();
        let v = parse_vms(&["--config", f.to_str().unwrap()]).unwrap();
        assert_eq!(
            v.iter().map(|c| c.guest_cid).collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    #[test]
    fn socket_path_with_vms_is_refused() {
        assert!(parse_vms(&[
            "--socket-path",
            "/s",
            "--vm",
            "guest-cid=3,socket=/a,uds-path=/ua"
        ])
        .is_err());
    }

    #[test]
    fn forwarding_options_are_parsed() {
        let c = parse(&[
            "--guest-cid",
            "3",
            "--forward-cid",
            "1",
            "--forward-listen",
            "7000+7001",
            "--forward-peers",
            "4+5",
        ])
        .unwrap();
        assert_eq!(
            (c.forward_cid, c.forward_listen, c.forward_peers),
            (Some(1), vec![7000, 7001], Some(vec![4, 5]))
        );
        let any = [
            "--guest-cid",
            "3",
            "--forward-listen",
            "7000",
            "--forward-peers",
            "any",
        ];
        assert_eq!(parse(&any).unwrap().forward_peers, None);
        assert!(parse(&[
            "--guest-cid",
            "3",
            "--forward-listen",
            "7000,x",
            "--forward-peers",
            "any"
        ])
        .is_err());
        assert!(parse(&[
            "--guest-cid",
            "3",
            "--forward-listen",
            "7000",
            "--forward-peers",
            "x"
        ])
        .is_err());
    }

    #[test]
    fn forward_listen_without_its_peers_is_refused() {
        let err = parse(&["--guest-cid", "3", "--forward-listen", "7000"]).unwrap_err();
        assert!(err.contains("--forward-peers"), "{err}");
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn tiny_buffer_is_refused() {
        assert!(parse(&["--guest-cid", "3", "--buffer-size", "10"]).is_err());
    }
}
