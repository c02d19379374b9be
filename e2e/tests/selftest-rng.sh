# Harness self-test: the rng guest test against a tiny Python vhost-user rng
# backend (e2e/tools/fake-vhost-user-rng.py) instead of vhost-device-rng.
# Checks QEMU, the kernel and the guest side without any workspace daemon.
#
# e2e-default: no
# e2e-host: exec python3 @E2E@/tools/fake-vhost-user-rng.py @DIR@/rng.sock
# e2e-socket: @DIR@/rng.sock
# e2e-qemu: -chardev socket,id=rng0,path=@DIR@/rng.sock
# e2e-qemu: -device vhost-user-rng-pci,chardev=rng0

. /e2e/tests/rng.sh
