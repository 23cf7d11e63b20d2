#!/bin/sh
# gcingest preremove: stop the service before its binary goes away. dpkg
# calls it "remove" (or "upgrade"); rpm calls %preun with 0 on an erase and
# 1 on an upgrade. On an upgrade postinstall restarts it instead.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop gcingest.service || true
		systemctl disable gcingest.service || true
	fi
	;;
esac
exit 0
