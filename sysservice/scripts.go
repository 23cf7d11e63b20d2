package sysservice

import (
	"fmt"
	"strings"
)

// User is the account the agent runs as on Linux. Never root: a root agent
// leaves a root-owned state file that locks every later command of the
// gcingest user out.
const User = "gcingest"

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// SysVScript is the init script `service install` writes on a system
// without systemd, upstart or OpenRC. kardianos/service's own SysV script
// ignores Config.UserName (the agent ran as root) and its "status" exits 1
// for a stopped service, which the library reports as "exit status 1".
// This one starts the agent as user with setpriv (util-linux 2.33+, which
// execs the agent itself, so the PID file holds the agent's PID) or su,
// and follows LSB exit codes (status: 0 running, 3 stopped).
//
// It holds no "{{": kardianos/service renders it as a template.
func SysVScript(exe, cfgPath, user string) string {
	return fmt.Sprintf(`#!/bin/sh
# gcingest: SysV init script written by "gcingest service install";
# "gcingest service uninstall" removes it.
### BEGIN INIT INFO
# Provides:          gcingest
# Required-Start:    $network $remote_fs $syslog
# Required-Stop:     $network $remote_fs $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: gcingest upload agent
# Description:       Uploads medical images from drop folders to Grand Challenge.
### END INIT INFO
# chkconfig: 2345 99 01

user=%s
exe=%s
config=%s
pid_file=/var/run/gcingest.pid
out_log=/var/log/gcingest.log
err_log=/var/log/gcingest.err

is_running() {
	[ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start() {
	if is_running; then
		echo "gcingest: already running"
		return 0
	fi
	touch "$out_log" "$err_log"
	if command -v setpriv >/dev/null 2>&1; then
		setpriv --reuid="$user" --regid="$user" --init-groups \
			"$exe" run --config "$config" >>"$out_log" 2>>"$err_log" &
	else
		su -s /bin/sh -c 'exec "$0" run --config "$1"' "$user" "$exe" "$config" >>"$out_log" 2>>"$err_log" &
	fi
	echo $! >"$pid_file"
	# A wrong config or token ends the agent at once: say so here.
	sleep 1
	if ! is_running; then
		rm -f "$pid_file"
		echo "gcingest: exited at once; the end of $err_log:" >&2
		tail -n 5 "$err_log" >&2
		return 1
	fi
	echo "gcingest: started as user $user"
}

stop() {
	if ! is_running; then
		rm -f "$pid_file"
		echo "gcingest: not running"
		return 0
	fi
	kill -TERM "$(cat "$pid_file")"
	# The agent commits its last step and closes the state file in seconds.
	i=0
	while is_running && [ $i -lt 30 ]; do
		sleep 1
		i=$((i + 1))
	done
	if is_running; then
		echo "gcingest: still running 30 s after SIGTERM" >&2
		return 1
	fi
	rm -f "$pid_file"
	echo "gcingest: stopped"
}

case "$1" in
start) start ;;
stop) stop ;;
restart) stop && start ;;
reload | force-reload)
	# SIGHUP re-reads the config's watch list.
	is_running && kill -HUP "$(cat "$pid_file")"
	;;
status)
	if is_running; then
		echo "Running"
		exit 0
	fi
	echo "Stopped"
	exit 3
	;;
*)
	echo "usage: $0 start|stop|restart|reload|status" >&2
	exit 2
	;;
esac
`, shQuote(user), shQuote(exe), shQuote(cfgPath))
}

// OpenRCScript is the OpenRC service `service install` writes: kardianos's
// own runs the agent as root and turns our systemd dependencies into
// invalid depend() lines. openrc-run's command_user runs it as user.
func OpenRCScript(exe, cfgPath, user string) string {
	return fmt.Sprintf(`#!/sbin/openrc-run
# gcingest: written by "gcingest service install".
name="gcingest"
description="Uploads medical images from drop folders to Grand Challenge."
supervisor=supervise-daemon
command=%s
command_args="run --config %s"
command_user="%s:%s"
output_log=/var/log/gcingest.log
error_log=/var/log/gcingest.err
extra_started_commands="reload"

depend() {
	need net
	after netmount localmount
}

reload() {
	ebegin "Reloading gcingest's watch list"
	supervise-daemon "$RC_SVCNAME" --signal HUP
	eend $?
}
`, shQuote(exe), shQuote(cfgPath), user, user)
}
