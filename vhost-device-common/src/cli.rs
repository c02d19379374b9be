// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command-line options shared by every daemon.
//!
//! A device's `args.rs` flattens [`CommonArgs`] into its own clap struct, so every
//! daemon accepts exactly the same socket and logging options:
//!
//! | option | meaning |
//! |---|---|
//! | `--socket-path PATH` | create and listen on the Unix socket `PATH` (this or `--socket-fd` is required) |
//! | `--socket-fd FD` | serve an inherited, already-listening socket (systemd socket activation) |
//! | `--socket-count N` | serve `N` independent devices from one process |
//! | `--poll-us N` | after work, a worker polls its rings for a self-tuning window of at most `N` µs before it sleeps (0: never; see [`crate::poll`]) |
//! | `-v`, `--verbose` | more logging (`-v` debug, `-vv` trace); `RUST_LOG` overrides; default `info` |
//! | `--print-capabilities` | print the vhost-user.json capabilities and exit |
//!
//! # Naming of several sockets
//!
//! With `--socket-count N` greater than 1, device `i` (counting from 0) listens on
//! `PATH` with `i` appended (`/run/rng.sock0`, `/run/rng.sock1`, …), or on the
//! inherited descriptor `FD + i` (systemd passes consecutive descriptors from 3).
//! With `N = 1` the path or descriptor is used as given.

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::Args;

/// The largest `--socket-count` accepted.
pub const MAX_SOCKET_COUNT: u32 = 256;

/// The default `--poll-us`: off. Measured on the scsi daemon (its README),
/// polling cuts depth-1 latency by a fifth to a half on a host with cores
/// to spare, for more CPU per I/O, and gains nothing at depth or where the
/// cores are shared with the guests' vCPUs, whose CPU it would take.
pub const DEFAULT_POLL_US: u32 = 0;

/// Options every vhost-device daemon accepts. Flatten into the device's `Args`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonArgs {
    /// Unix socket to create and listen on for the vhost-user front end
    /// (with --socket-count N > 1: PATH0 … PATH{N-1})
    #[arg(
        long,
        value_name = "PATH",
        visible_alias = "socket",
        conflicts_with = "socket_fd"
    )]
    pub socket_path: Option<PathBuf>,

    /// Inherited, already-listening Unix socket to serve, as systemd socket
    /// activation passes it (with --socket-count N > 1: FD … FD+N-1)
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(i32).range(0..))]
    pub socket_fd: Option<RawFd>,

    /// Number of independent devices to serve, one per socket
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SOCKET_COUNT))
    )]
    pub socket_count: u32,

    /// After serving requests, a worker keeps polling its rings for a
    /// self-tuning window of at most this many microseconds before it
    /// sleeps, with the driver's notifications off: lower latency for more
    /// CPU while requests keep coming; an idle daemon still uses no CPU.
    /// 0 turns polling off
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_POLL_US,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::poll::MAX_POLL_US))
    )]
    pub poll_us: u32,

    /// More log output (-v debug, -vv trace); RUST_LOG takes precedence
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print the back-end capabilities as JSON (QEMU's vhost-user.json) and exit
    #[arg(long)]
    pub print_capabilities: bool,
}

/// Where the daemon's listening sockets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSource {
    /// Create and bind these paths.
    Paths(Vec<PathBuf>),
    /// Adopt these inherited listening descriptors.
    Fds(Vec<RawFd>),
}

impl CommonArgs {
    /// The sockets to serve, after applying `--socket-count` naming.
    ///
    /// Returns `None` when neither `--socket-path` nor `--socket-fd` was given
    /// (`daemon::run` then refuses to start, unless printing capabilities).
    pub fn sockets(&self) -> Option<SocketSource> {
        let count = self.socket_count.max(1);
        if let Some(path) = &self.socket_path {
            if count == 1 {
                return Some(SocketSource::Paths(vec![path.clone()]));
            }
            let paths = (0..count)
                .map(|i| {
                    let mut name = path.clone().into_os_string();
                    name.push(i.to_string());
                    PathBuf::from(name)
                })
                .collect();
            return Some(SocketSource::Paths(paths));
        }
        let fd = self.socket_fd?;
        // `count` is at most MAX_SOCKET_COUNT, so it always fits an i32.
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        Some(SocketSource::Fds(
            (0..count).filter_map(|i| fd.checked_add(i)).collect(),
        ))
    }

    /// The `--poll-us` ceiling of the poll window.
    pub fn poll_max(&self) -> std::time::Duration {
        std::time::Duration::from_micros(u64::from(self.poll_us))
    }

    /// The log filter implied by `-v` when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }

    /// Initialise `env_logger`: `RUST_LOG` if set, else the `-v` level.
    ///
    /// Calling it twice is harmless (the second call does nothing).
    pub fn init_logging(&self) {
        let env = env_logger::Env::default().default_filter_or(self.default_log_filter());
        let _ = env_logger::Builder::from_env(env)
            .format_timestamp_millis()
            .try_init();
    }
}

/// Why a `key=value,…` option could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyValueError {
    /// A key appeared twice.
    #[error("'{0}' is given twice")]
    Duplicate(String),
    /// An empty key (`,,` or `=x`).
    #[error("empty option name in '{0}'")]
    EmptyKey(String),
}

/// Parse the one structured-option syntax every daemon uses for repeated,
/// structured values: `key=value,key,key=value`. A bare `key` has no value.
/// A first item without `=` can be taken as the main value by the caller
/// (`--lun disk.img,ro` is `[("disk.img", None), ("ro", None)]`).
pub fn parse_key_values(s: &str) -> Result<Vec<(String, Option<String>)>, KeyValueError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for item in s.split(',') {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (item.trim(), None),
        };
        if key.is_empty() {
            return Err(KeyValueError::EmptyKey(s.to_string()));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(KeyValueError::Duplicate(key.to_string()));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestArgs {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<CommonArgs, clap::Error> {
        TestArgs::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|a| a.common)
    }

    #[test]
    fn socket_path_with_count_one_is_used_verbatim() {
        let args = parse(&["--socket-path", "/tmp/x.sock"]).unwrap();
        assert_eq!(
            args.sockets(),
            Some(SocketSource::Paths(vec![PathBuf::from("/tmp/x.sock")]))
        );
    }

    #[test]
    fn socket_count_appends_index_to_path() {
        let args = parse(&["--socket-path", "/tmp/x.sock", "--socket-count", "3"]).unwrap();
        assert_eq!(
            args.sockets(),
            Some(SocketSource::Paths(vec![
                PathBuf::from("/tmp/x.sock0"),
                PathBuf::from("/tmp/x.sock1"),
                PathBuf::from("/tmp/x.sock2"),
            ]))
        );
    }

    #[test]
    fn socket_count_takes_consecutive_fds() {
        let args = parse(&["--socket-fd", "3", "--socket-count", "2"]).unwrap();
        assert_eq!(args.sockets(), Some(SocketSource::Fds(vec![3, 4])));
    }

    #[test]
    fn path_and_fd_together_are_rejected() {
        let err = parse(&["--socket-path", "/tmp/x", "--socket-fd", "3"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn missing_socket_leaves_no_socket_source() {
        // `daemon::run` reports this (a daemon may name its sockets otherwise).
        assert_eq!(parse(&[]).unwrap().sockets(), None);
    }

    #[test]
    fn print_capabilities_needs_no_socket() {
        let args = parse(&["--print-capabilities"]).unwrap();
        assert!(args.print_capabilities);
        assert_eq!(args.sockets(), None);
    }

    #[test]
    fn zero_socket_count_is_rejected() {
        assert!(parse(&["--socket-path", "/tmp/x", "--socket-count", "0"]).is_err());
    }

    #[test]
    fn old_socket_spelling_is_accepted() {
        let args = parse(&["--socket", "/tmp/x"]).unwrap();
        assert_eq!(args.socket_path, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn poll_us_defaults_and_is_bounded() {
        let args = parse(&["--socket-path", "/tmp/x"]).unwrap();
        assert_eq!(args.poll_us, DEFAULT_POLL_US);
        let args = parse(&["--socket-path", "/tmp/x", "--poll-us", "50"]).unwrap();
        assert_eq!(args.poll_max(), std::time::Duration::from_micros(50));
        assert!(parse(&["--socket-path", "/tmp/x", "--poll-us", "1000001"]).is_err());
        assert!(parse(&["--socket-path", "/tmp/x", "--poll-us", "-1"]).is_err());
    }

    #[test]
    fn key_values_parse_bare_and_valued_items() {
        assert_eq!(
            parse_key_values("disk.img,ro,block-size=4096").unwrap(),
            vec![
                ("disk.img".to_string(), None),
                ("ro".to_string(), None),
                ("block-size".to_string(), Some("4096".to_string())),
            ]
        );
    }

    #[test]
    fn key_values_reject_duplicates_and_empty_keys() {
        assert!(matches!(
            parse_key_values("a,a"),
            Err(KeyValueError::Duplicate(_))
        ));
        assert!(matches!(
            parse_key_values("a,,b"),
            Err(KeyValueError::EmptyKey(_))
        ));
    }

    #[test]
    fn verbosity_raises_default_filter() {
        assert_eq!(
            parse(&["--print-capabilities"])
                .unwrap()
                .default_log_filter(),
            "info"
        );
        assert_eq!(
            parse(&["--print-capabilities", "-vv"])
                .unwrap()
                .default_log_filter(),
            "trace"
        );
    }
}
