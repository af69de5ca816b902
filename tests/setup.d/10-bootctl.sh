#!/usr/bin/env bash
# Tools the boot-flow tests cross-check against (fleet-bootctl): mkimage compiles the U-Boot
# boot script, fw_printenv/fw_setenv (libubootenv) read and write the env file we write.
# Idempotent: installs only what is missing.
. "$(dirname "$0")/lib.sh"
setup_apt_install u-boot-tools libubootenv-tool
