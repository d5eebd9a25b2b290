#!/bin/sh
# Install the built package for real, check what it made, purge it, check it is all gone.
# Run as root on a host you can change (a throw-away VM or container, or a dev box):
#   packaging/check-install.sh dist/blockhost-provisioner_*.deb
# Prints one "ok:" line per check; the first failed check stops it with "FAIL:" and exit 1.
set -eu

deb=$(realpath "$1")
venv=/opt/venvs/blockhost-provisioner
units="blockhost-listener.service blockhost-gc.service blockhost-gc.timer
blockhost-backup.service blockhost-backup.timer blockhost-web.service"

ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
mode_owner() { stat -c '%a %U:%G' "$1"; }
enabled_links() { find /etc/systemd/system -name 'blockhost-*' 2>/dev/null | head -1; }

DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" >/dev/null
ok "apt-get install $deb"
/usr/bin/blockhost --help >/dev/null || fail "blockhost --help"
ok "blockhost --help"
for alias in blockhost-vm-gc blockhost-vm-create blockhost-mint-nft; do
    "/usr/bin/$alias" --help >/dev/null || fail "$alias --help"
    ok "$alias --help"
done
getent passwd blockhost | grep -q ':/var/lib/blockhost:/usr/sbin/nologin$' \
    || fail "system user blockhost"
ok "user: $(getent passwd blockhost)"
[ "$(mode_owner /etc/blockhost)" = "750 root:blockhost" ] || fail "/etc/blockhost $(mode_owner /etc/blockhost)"
ok "/etc/blockhost $(mode_owner /etc/blockhost)"
[ "$(mode_owner /var/lib/blockhost)" = "750 blockhost:blockhost" ] \
    || fail "/var/lib/blockhost $(mode_owner /var/lib/blockhost)"
ok "/var/lib/blockhost $(mode_owner /var/lib/blockhost)"
grep -qx /etc/blockhost/blockhost.yaml.example /var/lib/dpkg/info/blockhost-provisioner.conffiles \
    || fail "example config is not a conffile"
ok "conffile /etc/blockhost/blockhost.yaml.example"
[ -f /usr/share/blockhost/cloud-init/templates/nft-auth.yaml ] || fail "templates"
ok "templates in /usr/share/blockhost/cloud-init/templates"
for unit in $units; do
    [ -f "/lib/systemd/system/$unit" ] || fail "$unit not installed"
done
[ -z "$(enabled_links)" ] || fail "a unit is enabled: $(enabled_links)"
ok "units installed, none enabled (no link under /etc/systemd/system)"
[ -n "$(find $venv -name '*.pyc' -print -quit)" ] || fail "no bytecode compiled"
ok "bytecode compiled by the postinst"
runuser -u blockhost -- /usr/bin/blockhost keys generate --out /var/lib/blockhost/probe.key >/dev/null \
    || fail "user blockhost cannot run blockhost or write /var/lib/blockhost"
[ "$(mode_owner /var/lib/blockhost/probe.key)" = "600 blockhost:blockhost" ] || fail "probe key mode"
ok "user blockhost runs blockhost keys generate into /var/lib/blockhost (600 blockhost:blockhost)"

DEBIAN_FRONTEND=noninteractive apt-get purge -y -q blockhost-provisioner >/dev/null
ok "apt-get purge blockhost-provisioner"
for path in $venv /etc/blockhost /var/lib/blockhost /usr/share/blockhost \
            /usr/bin/blockhost /usr/bin/blockhost-vm-gc /lib/systemd/system/blockhost-listener.service; do
    [ ! -e "$path" ] || fail "$path is still there"
done
ok "venv, /etc/blockhost, /var/lib/blockhost, templates, commands and units are gone"
[ -z "$(dpkg-statoverride --list /etc/blockhost)" ] || fail "statoverride left"
ok "no statoverride left"
[ -z "$(enabled_links)" ] || fail "unit links left: $(enabled_links)"
ok "no unit links left"
getent passwd blockhost >/dev/null && ok "user blockhost kept (Debian policy: never remove a system user)"

# Purge keeps what the operator put in /etc/blockhost (a lost deployer key is a lost contract).
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" >/dev/null
install -o blockhost -g blockhost -m 0600 /dev/null /etc/blockhost/pve-token
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q blockhost-provisioner >/dev/null 2>&1
[ -f /etc/blockhost/pve-token ] && [ ! -e /etc/blockhost/blockhost.yaml.example ] \
    && [ ! -e /var/lib/blockhost ] && [ ! -e $venv ] || fail "purge with an operator's file"
ok "purge after the operator added /etc/blockhost/pve-token: only that file is left"
rm -rf /etc/blockhost
