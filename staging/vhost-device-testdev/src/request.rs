// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parsing the test device's commands (pure: bytes in, command out).

/// Longest command accepted; longer ones are answered `bad`.
pub const MAX_COMMAND: usize = 4096;

/// One request of the test device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer these bytes at once.
    Echo(Vec<u8>),
    /// Hold the request until a `release`.
    Hold,
    /// Complete every held request, then this one.
    Release,
    /// Bump the config generation and tell the front end.
    Config,
    /// Map a page with a known text into shared memory region 0.
    Map,
    /// Add a shared object with a fixed UUID.
    Share,
    /// Anything else.
    Bad,
}

/// Parse the device-readable bytes of a request.
pub fn parse(bytes: &[u8]) -> Command {
    match bytes {
        b"hold" => Command::Hold,
        b"release" => Command::Release,
        b"config" => Command::Config,
        b"map" => Command::Map,
        b"share" => Command::Share,
        _ => match bytes.strip_prefix(b"echo ") {
            Some(rest) => Command::Echo(rest.to_vec()),
            None => Command::Bad,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_and_the_rest_is_bad() {
        assert_eq!(parse(b"echo hi"), Command::Echo(b"hi".to_vec()));
        assert_eq!(parse(b"hold"), Command::Hold);
        assert_eq!(parse(b"release"), Command::Release);
        assert_eq!(parse(b"config"), Command::Config);
        assert_eq!(parse(b"map"), Command::Map);
        assert_eq!(parse(b"share"), Command::Share);
        assert_eq!(parse(b"hold "), Command::Bad);
        assert_eq!(parse(b""), Command::Bad);
    }
}
