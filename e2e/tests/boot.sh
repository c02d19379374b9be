# Smoke test: the guest boots, busybox works, the init script runs the test
# and the marker reaches the host.  Starts no daemon.
# e2e-timeout: 60

[ -r /proc/cmdline ] || fail "/proc not mounted"
[ -d /sys/bus/pci/devices ] || fail "no PCI bus in sysfs"
[ -c /dev/null ] || fail "devtmpfs not mounted"
echo hello >/tmp/x && [ "$(cat /tmp/x)" = hello ] || fail "tmpfs /tmp not writable"
info "kernel $(uname -r), $(grep -c . /proc/cpuinfo) cpuinfo lines, uptime $(cut -d' ' -f1 /proc/uptime)s"
