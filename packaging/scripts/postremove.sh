#!/bin/sh
# gcingest postremove. dpkg calls it "remove", "purge" or "upgrade"; rpm
# calls %postun with 0 on an erase and 1 on an upgrade.
#
# The token is a secret the package did not install: "dpkg --purge" and an
# rpm erase remove it. A purge removes the rest of /etc/gcingest too; "dpkg
# -r" keeps the config and token (Debian's rule: remove keeps what purge
# deletes), and an rpm erase keeps an edited config as config.toml.rpmsave
# (rpm's rule for %config files).
#
# The state folder /var/lib/gcingest and the gcingest user stay even on
# purge: the state file is the record of what was uploaded (remove it by
# hand once it is no longer needed).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
case "$1" in
purge)
	rm -rf /etc/gcingest
	;;
0)
	rm -f /etc/gcingest/token
	rmdir /etc/gcingest 2>/dev/null || true
	;;
esac
exit 0
