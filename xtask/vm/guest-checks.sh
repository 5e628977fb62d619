#!/usr/bin/env bash
# The virtual-machine tier's checks, run inside a Debian 12 guest booted on Debian's own kernel
# with systemd as PID 1 (by /usr/local/sbin/vm-run, from the share at /mnt/host). Each check
# prints "ok - NAME" or "not ok - NAME: why"; the host fails on any "not ok", on a missing
# "phase PHASE done", and on a hang.
#
#   install  first boot: install the package as a user does, then the service under systemd:
#            notify, hardening, a first start that fails, sessions, verify, restart across a
#            session, watchdog, stop and start
#   boot     second boot of the same disk: started at boot, the trail intact, then purge
set -uo pipefail
phase=${1:?phase}
share=/mnt/host
out=$share/out
failed=0

ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; failed=1; }
check() { # check NAME COMMAND...: ok when the command succeeds (its output is not kept)
	local name=$1
	shift
	if "$@" >/dev/null; then ok "$name"; else fail "$name"; return 1; fi
}
# wait_for SECONDS COMMAND...: poll until the command succeeds.
wait_for() {
	local until=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$until" ] || return 1
		sleep 1
	done
}
prop() { systemctl show agentmon -P "$1"; }
active() { [ "$(systemctl is-active agentmon)" = active ]; }
capturing() { agentmon status --json 2>/dev/null | jq -e '.capturing == true' >/dev/null; }

# A session: prints its id. The agent is the command given; the commands it runs are its
# actions.
run_session() {
	local agent=$1
	shift
	agentmon run --agent "$agent" -- "$@" 2>"/tmp/run-$agent.err" >/dev/null
	sed -n 's/^agentmon: session \([0-9a-f-]*\).*/\1/p' "/tmp/run-$agent.err" | head -n 1
}
session_ended() { agentmon sessions --json | jq -e --arg id "$1" 'select(.id == $id and .ended_at != null)' >/dev/null; }
# Every action of a session, as one JSON array.
actions() { agentmon actions --session "$1" --json | jq -s .; }
# has ID FILTER: the session's actions satisfy the jq FILTER. Polled with wait_for: an action
# can be stored a moment after its session's end under emulation.
has() { actions "$1" | jq -e "$2" >/dev/null; }

echo "kernel $(uname -r), systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), phase $phase"

if [ "$phase" = install ]; then
	# What this kernel offers, for the record.
	{
		uname -a
		cat /sys/kernel/security/lsm 2>/dev/null && echo
		for tp in sched/sched_process_exit sched/sched_process_fork sched/sched_process_exec \
			io_uring/io_uring_submit_req io_uring/io_uring_submit_sqe io_uring/io_uring_complete \
			cgroup/cgroup_mkdir signal/signal_generate; do
			f=/sys/kernel/tracing/events/$tp/format
			[ -e "$f" ] || f=/sys/kernel/debug/tracing/events/$tp/format
			echo "== $tp"
			cat "$f" 2>/dev/null || echo "(missing)"
		done
	} >"$out/kernel-$(uname -r).txt" 2>&1

	cp "$share/agentmon.deb" /tmp/agentmon.deb
	if apt-get install -y -q /tmp/agentmon.deb >/tmp/apt.log 2>&1; then
		ok "apt-get install ./agentmon.deb"
	else
		fail "apt-get install ./agentmon.deb: $(tail -n 5 /tmp/apt.log | tr '\n' ' ')"
	fi
	check "the service is active after install (Type=notify: READY only when capturing)" active
	if ! active; then
		# Nothing after this can pass: say why and stop.
		journalctl -u agentmon -b --no-pager | tail -n 40
		exit 1
	fi
	check "the service is enabled" test "$(systemctl is-enabled agentmon)" = enabled
	check "status: capturing" capturing
	agentmon status --json >"$out/status-$(uname -r).json" 2>&1
	agentmon status >"$out/status-$(uname -r).txt" 2>&1
	check "status lists the capture paths in use" jq -e '.capture_paths | length > 0' "$out/status-$(uname -r).json"
	check "Type=notify" test "$(prop Type)" = notify
	check "sd_notify STATUS from the daemon" grep -q capturing <<<"$(prop StatusText)"
	pid=$(prop MainPID)
	check "NoNewPrivileges in force" grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status"
	check "a seccomp filter in force" grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status"
	check "the capability bounding set is cut" test "$(awk '/^CapBnd/ {print $2}' "/proc/$pid/status")" != "000001ffffffffff"
	check "ProtectSystem=strict: /usr is read-only for the daemon" bash -c "! nsenter -t $pid -m touch /usr/lib/.agentmon-ro-probe 2>/dev/null"
	check "PrivateDevices: no disk device for the daemon" bash -c "! nsenter -t $pid -m test -e /dev/vda"
	check "ProtectHome=read-only: /root is read-only for the daemon" bash -c "! nsenter -t $pid -m touch /root/.agentmon-ro-probe 2>/dev/null"
	check "LimitCORE=0" grep -Eq '^Max core file size +0 +0 ' "/proc/$pid/limits"
	check "OOMScoreAdjust=-500" test "$(cat "/proc/$pid/oom_score_adj")" = -500
	touch /tmp/agentmon-host-probe
	check "PrivateTmp: the host's /tmp is not the daemon's" bash -c "! nsenter -t $pid -m test -e /tmp/agentmon-host-probe"
	check "state dir root:root 0711" test "$(stat -c '%U:%G %a' /var/lib/agentmon)" = "root:root 711"
	check "the embedded cluster is postgres's" test "$(stat -c %U /var/lib/agentmon/postgres/data)" = postgres
	systemd-analyze security agentmon --no-pager >"$out/security-$(uname -r).txt" 2>&1
	check "systemd-analyze security runs" grep -q 'Overall exposure level' "$out/security-$(uname -r).txt"

	# A session whose agent runs one command: it writes a file, reads one (through a child),
	# connects to a closed port, and exits 3.
	id=$(run_session vm-check bash -c 'bash -c "echo hello >/tmp/vm-file; cat /etc/hostname >/dev/null; (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null; exit 3"; exit 0')
	check "agentmon run prints the session id" test -n "$id"
	check "the session is stored and ends" wait_for 60 session_ended "$id"
	check "the command is stored with its exit code" wait_for 30 has "$id" '.[] | select(.argv[0] == "bash" and .exit_code == 3)'
	actions "$id" >"$out/actions-$(uname -r).json"
	check "its file write is stored" has "$id" '.[].files[] | select(.path == "/tmp/vm-file" and (.access == "write" or .access == "create") and .result == "ok")'
	check "its file read is stored" has "$id" '.[].files[] | select(.path == "/etc/hostname" and .access == "read")'
	check "its connect is stored" has "$id" '.[].net[] | select(.op == "connect" and .addr == "127.0.0.1" and .port == 9 and .result == "ECONNREFUSED")'
	check "its child processes are stored" has "$id" '[.[].processes[] | select(.argv[0] == "cat")] | length == 1'
	check "verify is clean" agentmon verify

	# The agents' own account under systemd: the intake socket takes a hook's report from a
	# session (`agentmon hook` started by the session's agent process itself, so attested), and
	# the OTLP receiver listens on its default address.
	check "the intake socket is open to every user" test "$(stat -c %a /run/agentmon/intake.sock)" = 666
	check "the OTLP receiver listens on 127.0.0.1:4318" bash -c "agentmon status --json | jq -e '.account.otlp_listen == \"127.0.0.1:4318\"'"
	hid=$(run_session vm-hook bash -c 'echo "{\"hook_event_name\":\"SessionStart\",\"session_id\":\"vm\"}" | agentmon hook; echo "hook exit $?" >&2; exit 0')
	check "agentmon hook runs in a session" test -n "$hid"
	wait_for 30 bash -c "agentmon status --json | jq -e '.account.reports >= 1'" >/dev/null
	agentmon status --json >"$out/status-hook-$(uname -r).json" 2>&1
	cp /tmp/run-vm-hook.err "$out/run-vm-hook-$(uname -r).err" 2>/dev/null
	check "the hook's report is stored and attested" jq -e '.account.reports >= 1 and .account.unattested == 0 and .account.refused_no_session == 0' "$out/status-hook-$(uname -r).json"

	# Issue 22: each object named as the kernel used it. The blind-spot attacks of
	# tests/tests/kernel_objects.rs (the same workload binary) run in both capture modes on this
	# kernel: the default (fexit), then the fallback (`capture_fexit = false`: the syscall
	# tracepoints). Each mode's cost for processes outside every session is the kernel's own
	# BPF run count per untagged call (agentmon-bench).
	W=/mnt/host/agentmon-workload
	B=/mnt/host/agentmon-bench
	kobj() { # kobj MODE: the attacks in a session, and what was stored
		local mode=$1 k=/tmp/kobj-$1 kid
		mkdir -p $k/a $k/b $k/root $k/ur $k/um $k/uo $k/ux $k/.ssh /etc/cron.d
		sleep 300 &
		local victim=$!
		echo x >$k/a/from
		echo x >$k/root/victim
		echo x >$k/ft
		kid=$(run_session "vm-kobj-$mode" bash -c "$W handle-open $k && $W fexecve /bin/echo fexecve-ran && $W uring-fixed-open $k/fixed && $W uring-rename $k/a from $k/b moved && $W openat2-race $k/raced 2 && $W chroot-unlink $k/root victim && $W sendto-race 47205 9 && $W unlink-race $k/ur && $W unlink-race $k/um missing && $W unlink-race $k/uo open && $W unlink-race $k/ux exec && $W int80-chown16 $k/c16 && (cd $k && ln -s /etc/hostname sl) && truncate -s 0 $k/ft && $W raw-send 127.0.0.1 && $W uring-write $k/.ssh/authorized_keys 'ssh-ed25519 AAAA uring' && $W uring-sendmsg 127.0.0.1:47206 && $W decoys-then-write 10000 $k/.ssh/authorized_keys2 && $W proc-mem-write $victim && echo '* * * * * root true' >/etc/cron.d/agentmon-vm-$mode && $W scm-rights /etc/hostname && ln -sf /run/systemd/private $k/priv && (cd $k && $W unix-connect priv) && $W module-load; exit 0")
		check "$mode: the attack session ends" wait_for 120 session_ended "$kid"
		kill "$victim"
		rm -f "/etc/cron.d/agentmon-vm-$mode"
		check "$mode: the attacks took effect" bash -c "grep -q via-handle $k/handle-target && grep -q fixed $k/fixed && test -e $k/b/moved && grep -q raced $k/raced && ! test -e $k/root/victim"
		sleep 2
		local ev="$out/kobj-events-$mode-$(uname -r).json"
		agentmon events --session "$kid" --json | jq -s . >"$ev"
		check "$mode: open_by_handle_at names the real file" jq -e "any(.[]; .data.syscall == \"open_by_handle_at\" and .data.path == \"$k/handle-target\" and .data.result == \"ok\")" "$ev"
		check "$mode: fexecve names the executed file" jq -e "any(.[]; .kind == \"exec\" and (.data.filename | startswith(\"/dev/fd/\")) and .data.exe == \"$(readlink -f /bin/echo)\")" "$ev"
		check "$mode: an io_uring open into a fixed slot is not read as an fd" jq -e 'any(.[]; .kind == "io_uring" and .data.fixed_slot == 2 and .data.result == "ok")' "$ev"
		check "$mode: an io_uring rename resolves the new name's dirfd" has "$kid" ".[].files[] | select(.path == \"$k/b/moved\" and .access == \"rename_to\")"
		check "$mode: a raced openat2 is recorded as the write it was" jq -e "[.[] | select(.data.syscall == \"openat2\" and .data.path == \"$k/raced\" and (.data.mode | index(\"write\")))] | length == 2" "$ev"
		check "$mode: chroot is a tamper event" jq -e 'any(.[]; .data.tamper == "chroot")' "$ev"
		check "$mode: the chrooted unlink names the real file" jq -e "any(.[]; .data.syscall == \"unlink\" and .data.path == \"$k/root/victim\" and .data.path_given == \"/victim\")" "$ev"
		local zs=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz
		check "$mode: the raced unlink took effect" bash -c "! test -e $k/ur/AAAA$zs && test -e $k/ur/BBBB$zs"
		# With tracepoints the path is re-read from user memory at exit (the fallback's limit).
		[ "$mode" = tracepoints ] || check "$mode: a raced unlink names the file the kernel removed, and the name it was given" jq -e "any(.[]; .data.syscall == \"unlink\" and .data.path == \"$k/ur/AAAA$zs\" and .data.path_kernel == true and .data.path_given == \"$k/ur/AAAA$zs\" and .data.path_given_kernel == true)" "$ev"
		# A failed call never reaches the security_path hook: its name is the kernel's copy
		# (fentry on do_unlinkat, do_filp_open), not the caller's memory rewritten to BBBB.
		check "$mode: the raced failed unlink and open took effect as asked" bash -c "test -e $k/um/BBBB$zs && test -e $k/uo/BBBB$zs"
		for sc in unlink:um open:uo; do
			[ "$mode" = tracepoints ] || check "$mode: a raced failed ${sc%%:*} names the file the kernel looked for" jq -e "any(.[]; .data.syscall == \"${sc%%:*}\" and .data.result == \"ENOENT\" and .data.path == \"$k/${sc#*:}/AAAA$zs\" and .data.path_given_kernel == true) and (any(.[]; .data.result == \"ENOENT\" and .data.path == \"$k/${sc#*:}/BBBB$zs\") | not)" "$ev"
			[ "$mode" = fexit ] || check "$mode: a raced failed ${sc%%:*} is recorded (its name re-read at exit: the fallback's limit)" jq -e "any(.[]; .data.syscall == \"${sc%%:*}\" and .data.result == \"ENOENT\" and (.data.path | startswith(\"$k/${sc#*:}/\")))" "$ev"
		done
		[ "$mode" = tracepoints ] || check "$mode: a raced failed exec names the file the kernel looked for" jq -e "any(.[]; .kind == \"exec_failed\" and .data.filename == \"$k/ux/AAAA$zs\" and .data.filename_kernel == true and .data.error == \"ENOENT\")" "$ev"
		[ "$mode" = fexit ] || check "$mode: a raced failed exec is recorded (its name re-read at exit: the fallback's limit)" jq -e "any(.[]; .kind == \"exec_failed\" and (.data.filename | startswith(\"$k/ux/\")))" "$ev"
		check "$mode: a symlink by a relative link path is summarised under its real path" has "$kid" ".[].files[] | select(.path == \"$k/sl\" and .access == \"link\")"
		[ "$mode" = tracepoints ] || check "$mode: a symlink names the link the kernel made, and both names as the kernel copied them" jq -e "any(.[]; (.data.syscall // \"\" | startswith(\"symlink\")) and .data.path == \"$k/sl\" and .data.path_kernel == true and .data.path_given_kernel == true and .data.target == \"/etc/hostname\" and .data.path2_given_kernel == true)" "$ev"
		check "$mode: a raw IP send is recorded with its destination" jq -e 'any(.[]; .data.syscall == "sendto" and .data.addr == "127.0.0.1" and .data.result == "ok" and .data.sock_type == "other")' "$ev"
		[ "$mode" = tracepoints ] || check "$mode: a raw IP send's destination is the kernel's copy" jq -e 'any(.[]; .data.syscall == "sendto" and .data.addr == "127.0.0.1" and .data.addr_kernel == true and .data.sock_type == "other")' "$ev"
		check "$mode: an io_uring write to authorized_keys is a sensitive write in the summary" wait_for 30 has "$kid" ".[].files[] | select(.path == \"$k/.ssh/authorized_keys\" and .access == \"write\" and .sensitive == true)"
		check "$mode: an io_uring sendmsg names the kernel's destination" jq -e 'any(.[]; .kind == "io_uring" and .data.op == "sendmsg" and .data.phase == "complete" and .data.addr.port == 47206 and .data.addr_kernel == true)' "$ev"
		check "$mode: a sensitive write after 10,000 failed opens keeps its own summary entry" has "$kid" ".[].files[] | select(.path == \"$k/.ssh/authorized_keys2\" and .result == \"ok\" and .sensitive == true)"
		check "$mode: a write to another process's memory is a handoff" jq -e "any(.[]; .data.tamper == \"handoff\" and (tostring | contains(\"/proc/$victim/mem\")))" "$ev"
		check "$mode: a cron entry is a handoff" jq -e 'any(.[]; .data.tamper == "handoff" and .data.detail.service == "cron")' "$ev"
		check "$mode: an ftruncate names the fd's file" jq -e "any(.[]; .data.syscall == \"ftruncate\" and .data.path == \"$k/ft\" and .data.result == \"ok\")" "$ev"
		check "$mode: an i386 16-bit-uid chown is recorded" jq -e "any(.[]; .data.syscall == \"chown\" and .data.compat == true and .data.path == \"$k/c16\" and .data.result == \"ok\")" "$ev"
		check "$mode: a raced sendto names the kernel's destination" jq -e 'any(.[]; .data.syscall == "sendto" and .data.port == 47205 and .data.addr_kernel == true) and (any(.[]; .data.port == 9) | not)' "$ev"
		check "$mode: a received fd (SCM_RIGHTS) names the file the kernel installed" jq -e 'any(.[]; .data.syscall == "recvmsg" and .data.scm_rights == true and .data.path == "/etc/hostname" and .data.fds_received == 1)' "$ev"
		# systemd's private socket, asked through a relative symlink: the kernel's hook names the
		# socket it reached (fexit); the tracepoints see only the name given.
		check "$mode: a unix connect through a symlink is recorded" jq -e 'any(.[]; .data.syscall == "connect" and .data.addr_given[0] == "priv" and .data.result == "ok")' "$ev"
		[ "$mode" = tracepoints ] || check "$mode: a unix connect through a symlink names the socket the kernel reached, a systemd handoff" jq -e 'any(.[]; .data.syscall == "connect" and .data.addr == "/run/systemd/private" and .data.addr_kernel == true) and any(.[]; .data.tamper == "handoff" and .data.detail.service == "systemd" and .data.addr == "/run/systemd/private")' "$ev"
		check "$mode: module and kexec loads are kernel_code tamper events" jq -e '[.[] | select(.data.tamper == "kernel_code")] | length == 3' "$ev"
		for kind in getppid open; do
			$B --workload runs $kind 100000 | jq -c --arg m "$mode" '. + {mode: $m}' >>"$out/bpf-runs-$(uname -r).jsonl"
		done
	}
	# The default capture on this kernel is fexit (probed at start): every syscall stub, the
	# 32-bit ones too, and no syscall tracepoint or raw sys_enter program.
	agentmon status --json >"$out/status-fexit-$(uname -r).json" 2>&1
	journalctl -u agentmon -o json --no-pager | jq -c 'select(.MESSAGE == "fexit programs loaded") | with_entries(select(.key | test("^F_")))' | tail -n 1 | sed 's/^/  fexit load: /'
	check "destinations come from the cgroup hooks" jq -e 'any(.capture_paths[]; .what == "network destinations" and .state == "primary")' "$out/status-fexit-$(uname -r).json"
	check "fexit: syscalls are captured with fexit, 32-bit ones too" jq -e 'any(.capture_paths[]; .what == "syscalls" and .state == "primary") and any(.capture_paths[]; .what == "32-bit syscalls" and .state == "primary")' "$out/status-fexit-$(uname -r).json"
	check "fexit: path operations are named from the kernel's security_path hooks" jq -e 'any(.capture_paths[]; .what == "path operations" and .state == "primary") and any(.capture_paths[]; .what == "names as given" and .state == "primary") and .probe_kinds.fentry == 18 and any(.capture_paths[]; .what == "unix socket peers" and .state == "primary")' "$out/status-fexit-$(uname -r).json"
	check "fexit: raw and packet send destinations come from the kernel" jq -e 'any(.capture_paths[]; .what == "raw and packet send destinations" and .state == "primary")' "$out/status-fexit-$(uname -r).json"
	check "fexit: no syscall tracepoint and no raw sys_enter program is attached" jq -e '.probe_kinds.syscall_tracepoint == null and ([.probes[] | select(test("sys_enter|sys_exit"))] | length == 0) and .probe_kinds.fexit > 80' "$out/status-fexit-$(uname -r).json"
	for sc in $(jq -r '.capture_paths[] | select(.state == "missing") | .what | select(startswith("syscall ")) | ltrimstr("syscall ")' "$out/status-fexit-$(uname -r).json"); do
		check "fexit: syscall $sc is missing only because this kernel lacks it" bash -c "! grep -qw __x64_sys_$sc /proc/kallsyms"
	done
	kobj fexit
	# The fallback, as on a kernel that refuses fexit: the syscall tracepoints.
	cp /etc/agentmon/agentmon.toml /tmp/agentmon.toml.orig
	sed -i '1i capture_fexit = false' /etc/agentmon/agentmon.toml
	check "the service restarts with capture_fexit = false" systemctl restart agentmon
	agentmon status --json >"$out/status-tracepoints-$(uname -r).json" 2>&1
	check "tracepoints: syscalls are captured at the tracepoints" jq -e 'any(.capture_paths[]; .what == "syscalls" and .state == "fallback") and .probe_kinds.fexit == null' "$out/status-tracepoints-$(uname -r).json"
	kobj tracepoints
	cp /tmp/agentmon.toml.orig /etc/agentmon/agentmon.toml
	t0=$SECONDS
	check "the service restarts with the default capture" systemctl restart agentmon
	echo "  fexit restart: $((SECONDS - t0)) s (emulated)"
	wait_for 90 capturing
	sed "s/^/  bpf runs: /" "$out/bpf-runs-$(uname -r).jsonl"
	runs() { jq -se --arg m "$1" --arg k "$2" "map(select(.mode == \$m and .kind == \$k)) | .[0].runs_per_call $3" "$out/bpf-runs-$(uname -r).jsonl"; }
	check "tracepoints: an untagged getppid runs the raw sys_enter/sys_exit pair (32-bit capture)" runs tracepoints getppid '>= 1.9'
	check "fexit: an untagged getppid runs no program" runs fexit getppid '< 0.01'
	check "fexit: an untagged open/close runs fewer programs than with tracepoints" jq -se '(map(select(.mode == "fexit" and .kind == "open")) | .[0].runs_per_call) < (map(select(.mode == "tracepoints" and .kind == "open")) | .[0].runs_per_call)' "$out/bpf-runs-$(uname -r).jsonl"

	# systemctl restart in the middle of a session loses nothing of it.
	agentmon run --agent vm-restart -- bash -c 'for i in 1 2 3 4 5 6 7 8; do sh -c "echo $i >/tmp/r$i"; sleep 1; done' 2>/tmp/run-restart.err &
	runner=$!
	sleep 3
	check "systemctl restart" systemctl restart agentmon
	wait "$runner"
	rid=$(sed -n 's/^agentmon: session \([0-9a-f-]*\).*/\1/p' /tmp/run-restart.err | head -n 1)
	check "the session across the restart ends" wait_for 60 session_ended "$rid"
	check "all 8 commands across the restart are stored" wait_for 30 has "$rid" '[.[] | select(.argv[0] == "sh")] | length == 8'
	for i in 1 2 3 4 5 6 7 8; do
		check "write $i of 8 across the restart is stored" has "$rid" ".[].files[] | select(.path == \"/tmp/r$i\" and .result == \"ok\")"
	done
	if ! check "verify is clean after the restart" bash -c "agentmon verify >$out/verify-restart-$(uname -r).txt 2>&1"; then
		# What the chain holds around each finding, to tell a late row from a lost one.
		agentmon verify --json >"$out/verify-restart-$(uname -r).jsonl" 2>&1
		for t in events actions processes session_ends sessions alerts checkpoints signing_keys; do
			psql -X -A -F' ' -t "$(cat /run/agentmon/database.url)" -c "SELECT '$t', chain_seq, id FROM $t ORDER BY chain_seq DESC LIMIT 400" 2>&1
		done | sort -k2 -n >"$out/chain-rows-$(uname -r).txt"
		journalctl -u agentmon --no-pager -o short-monotonic | tail -n 200 >"$out/restart-journal-$(uname -r).txt"
	fi
	sed 's/^/  verify: /' "$out/verify-restart-$(uname -r).txt" | tail -n 5

	# The watchdog is fed: its timestamp moves, and no restart happens.
	w1=$(prop WatchdogTimestampMonotonic)
	restarts=$(prop NRestarts)
	sleep 20
	w2=$(prop WatchdogTimestampMonotonic)
	check "WatchdogSec is set" test "$(prop WatchdogUSec)" != 0
	check "the watchdog is fed ($w1 -> $w2)" test "${w2:-0}" -gt "${w1:-0}"
	check "no watchdog restart" test "$(prop NRestarts)" = "$restarts"

	# stop and start.
	check "systemctl stop" systemctl stop agentmon
	check "stopped: inactive" test "$(systemctl is-active agentmon)" = inactive
	check "stopped: status says no daemon (exit 1)" test "$(agentmon status >/dev/null 2>&1; echo $?)" = 1
	check "stopped: no postgres left" bash -c '! pgrep -f "[p]ostgres -D /var/lib/agentmon"'
	check "systemctl start" systemctl start agentmon
	check "started again: capturing" capturing

	# A first start that fails (here: a tracked-process map the kernel refuses, after the
	# embedded cluster is made) leaves nothing pinned and a state the next start can use.
	systemctl stop agentmon
	agentmon unload --force >/dev/null 2>&1
	rm -rf /var/lib/agentmon/*
	mkdir -p /etc/systemd/system/agentmon.service.d
	printf '[Service]\nExecStart=\nExecStart=/usr/bin/agentmon daemon --max-tracked-processes 4000000000\nRestart=no\n' \
		>/etc/systemd/system/agentmon.service.d/fail.conf
	systemctl daemon-reload
	check "the broken first start fails" bash -c '! systemctl start agentmon 2>/dev/null'
	check "the failed start pinned nothing" bash -c '[ -z "$(find /sys/fs/bpf/agentmon -mindepth 1 -maxdepth 1 -name "v*" 2>/dev/null)" ]'
	check "the failed start's cluster is postgres's" test "$(stat -c %U /var/lib/agentmon/postgres/data)" = postgres
	rm -rf /etc/systemd/system/agentmon.service.d
	systemctl daemon-reload
	systemctl reset-failed agentmon
	check "the next start succeeds" systemctl start agentmon
	check "and captures" capturing
	check "a restart after it too" systemctl restart agentmon
	check "and captures again" capturing
	id2=$(run_session vm-persist bash -c 'echo persisted >/tmp/vm-persist')
	echo "$id2" >"$out/persist-session"
	check "a session after the failed start is stored" wait_for 60 session_ended "$id2"
	check "verify is clean at the end of the first boot" agentmon verify
fi

if [ "$phase" = boot ]; then
	check "the service started at boot" wait_for 120 active
	if ! active; then
		journalctl -u agentmon -b --no-pager | tail -n 40
		exit 1
	fi
	check "capturing after boot" wait_for 60 capturing
	check "enabled" test "$(systemctl is-enabled agentmon)" = enabled
	id2=$(cat "$out/persist-session" 2>/dev/null)
	check "the first boot's session is still there" session_ended "$id2"
	check "verify is clean after the reboot" agentmon verify
	id3=$(run_session vm-boot bash -c 'sh -c "echo after-boot >/tmp/vm-boot"; exit 0')
	check "a session after the reboot ends" wait_for 60 session_ended "$id3"
	check "its write is stored" wait_for 30 has "$id3" '.[].files[] | select(.path == "/tmp/vm-boot")'
	check "verify is clean" agentmon verify

	ours=$(bpftool prog show 2>/dev/null | grep -c 'sched_process_e\|sys_enter_track\|signal_generate\|fx_\|fxb_\|kp_')
	check "bpftool sees the programs before purge ($ours)" test "$ours" -gt 0
	if dpkg --purge agentmon >/tmp/purge.log 2>&1; then ok "dpkg --purge agentmon"; else fail "dpkg --purge: $(tail -n 3 /tmp/purge.log | tr '\n' ' ')"; fi
	check "purge: no pins" test ! -e /sys/fs/bpf/agentmon
	# The kernel frees a prog array's programs (the fexit handlers) in deferred work after the
	# last reference goes: give it a moment, and name what is left when it does not go.
	ours_left() { bpftool prog show 2>/dev/null | grep 'sched_process_e\|sys_enter_track\|signal_generate\|fx_\|fxb_\|kp_'; }
	export -f ours_left
	if ! check "purge: no program left attached" wait_for 30 bash -c '! ours_left'; then
		ours_left | sed 's/^/  left: /'
	fi
	check "purge: no state dir" test ! -e /var/lib/agentmon
	check "purge: no config dir" test ! -e /etc/agentmon
	check "purge: no runtime dir" test ! -e /run/agentmon
	check "purge: no unit" test ! -e /usr/lib/systemd/system/agentmon.service
	check "purge: no agentmon group" bash -c '! getent group agentmon'
	check "purge: no daemon or postgres of ours" bash -c '! pgrep -f "[a]gentmon daemon|[/]var/lib/agentmon"'
	check "purge: no session cgroup parent" bash -c '[ ! -e /sys/fs/cgroup/agentmon ]'
fi

[ "$failed" = 0 ] && echo "phase $phase done"
exit "$failed"
