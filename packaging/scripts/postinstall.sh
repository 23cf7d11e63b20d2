#!/bin/sh
# gcingest postinstall: system user, state folder, config ownership, systemd.
# dpkg calls it "configure [OLD-VERSION]"; rpm calls %post with 1 on a first
# install and 2 or more on an upgrade.
set -e

case "$1" in
configure) if [ -z "$2" ]; then first=yes; else first=no; fi ;;
1) first=yes ;;
[2-9] | [1-9][0-9]*) first=no ;;
*) exit 0 ;; # dpkg's abort-upgrade, abort-remove ...: nothing to redo
esac

if ! getent passwd gcingest >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/gcingest --no-create-home \
		--shell /usr/sbin/nologin --comment "gcingest upload agent" gcingest
fi
# The state folder holds what was uploaded; an upgrade keeps it as it is.
install -d -o gcingest -g gcingest -m 0750 /var/lib/gcingest
# The config may hold the token: root's, read by the agent through its
# group and by no one else. The agent cannot change it (its url, say, to
# send the token elsewhere). An upgrade from 0600 gcingest:gcingest moves
# to this too.
chown root:gcingest /etc/gcingest/config.toml
chmod 0640 /etc/gcingest/config.toml
if [ -f /etc/gcingest/token ]; then
	chown root:gcingest /etc/gcingest/token
	chmod 0640 /etc/gcingest/token
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ "$first" = no ]; then
		# Upgrade: restart only if it was running.
		systemctl try-restart gcingest.service || true
	fi
fi
if [ "$first" = yes ]; then
	cat <<'MSG'
gcingest installed. To start it:
  1. edit /etc/gcingest/config.toml (the drop folder, archive and interface
     of the first [[watch]]; 'gcingest archives' and 'gcingest interfaces'
     list the slugs this token can use)
  2. put the API token in /etc/gcingest/token (chown root:gcingest, chmod 640)
  3. sudo -u gcingest gcingest check
  4. systemctl enable --now gcingest
MSG
fi
exit 0
