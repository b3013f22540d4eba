;; The WASI preview1 functions Go's runtime imports, answered without any
;; WASI 0.2 import: a Go component of Weir imports nothing but its world.
;; componentize.mjs passes this module to wit-component as the adapter for
;; `wasi_snapshot_preview1` (the standard adapter would allocate its state
;; through the module's allocator or by growing memory behind Go's back,
;; both during Go's _initialize, before Go can run).
;;
;; What a function sees is what the host grants anyway: no arguments, no
;; environment, no files or sockets, a clock frozen at the Unix epoch and
;; deterministic "random" bytes; the monotonic clock advances 1 µs a read
;; (Go's runtime refuses a clock that stands still), and a sleep (a clock
;; subscription of poll_oneoff) returns at once. Writes to stdout and stderr are accepted
;; and dropped; proc_exit (a fatal runtime error) traps.
(module
  (import "env" "memory" (memory 0))
  (global $seed (mut i64) (i64.const 0x2545f4914f6cdd1d))
  (global $monotonic (mut i64) (i64.const 1000000000))

  ;; errno values
  ;; 0 success, 8 badf, 52 nosys

  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "args_sizes_get") (param $argc i32) (param $size i32) (result i32)
    (i32.store (local.get $argc) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))
  (func (export "environ_sizes_get") (param $count i32) (param $size i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))

  (func (export "clock_res_get") (param i32) (param $res i32) (result i32)
    (i64.store (local.get $res) (i64.const 1000))
    (i32.const 0))
  (func (export "clock_time_get") (param $id i32) (param i64) (param $time i32) (result i32)
    (if (i32.eqz (local.get $id))
      (then (i64.store (local.get $time) (i64.const 0)) (return (i32.const 0))))
    (global.set $monotonic (i64.add (global.get $monotonic) (i64.const 1000)))
    (i64.store (local.get $time) (global.get $monotonic))
    (i32.const 0))

  ;; xorshift64*, from a fixed seed
  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $x i64)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $x (global.get $seed))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 12))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 25))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 27))))
        (global.set $seed (local.get $x))
        (i32.store8 (local.get $buf)
          (i32.wrap_i64 (i64.shr_u (i64.mul (local.get $x) (i64.const 0x2545f4914f6cdd1d)) (i64.const 56))))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; stdout and stderr accept everything; other descriptors do not exist
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $n i32) (param $written i32) (result i32)
    (local $sum i32)
    (if (i32.or (i32.lt_s (local.get $fd) (i32.const 1)) (i32.gt_s (local.get $fd) (i32.const 2)))
      (then (return (i32.const 8))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $sum (i32.add (local.get $sum) (i32.load offset=4 (local.get $iovs))))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $sum))
    (i32.const 0))
  (func (export "fd_read") (param $fd i32) (param i32 i32) (param $read i32) (result i32)
    (if (i32.ne (local.get $fd) (i32.const 0)) (then (return (i32.const 8))))
    (i32.store (local.get $read) (i32.const 0))
    (i32.const 0))
  ;; fd 0-2: a character device with every right
  (func (export "fd_fdstat_get") (param $fd i32) (param $stat i32) (result i32)
    (if (i32.gt_u (local.get $fd) (i32.const 2)) (then (return (i32.const 8))))
    (i32.store8 (local.get $stat) (i32.const 2))
    (i32.store16 offset=2 (local.get $stat) (i32.const 0))
    (i64.store offset=8 (local.get $stat) (i64.const -1))
    (i64.store offset=16 (local.get $stat) (i64.const -1))
    (i32.const 0))
  (func (export "fd_fdstat_set_flags") (param i32 i32) (result i32) (i32.const 0))
  (func (export "fd_prestat_get") (param i32 i32) (result i32) (i32.const 8))
  (func (export "fd_prestat_dir_name") (param i32 i32 i32) (result i32) (i32.const 8))
  (func (export "fd_close") (param i32) (result i32) (i32.const 0))
  (func (export "fd_sync") (param i32) (result i32) (i32.const 0))
  (func (export "fd_datasync") (param i32) (result i32) (i32.const 0))

  (func (export "sched_yield") (result i32) (i32.const 0))
  (func (export "proc_exit") (param i32) (unreachable))
  (func (export "proc_raise") (param i32) (result i32) (unreachable))

  ;; every subscription is ready at once: one event per subscription, with
  ;; its userdata and type and no error
  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $n i32) (param $events i32) (result i32)
    (i32.store (local.get $events) (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (i64.store (local.get $out) (i64.load (local.get $in)))
        (i32.store16 offset=8 (local.get $out) (i32.const 0))
        (i32.store8 offset=10 (local.get $out) (i32.load8_u offset=8 (local.get $in)))
        (i64.store offset=16 (local.get $out) (i64.const 0))
        (i64.store offset=24 (local.get $out) (i64.const 0))
        (local.set $in (i32.add (local.get $in) (i32.const 48)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; everything else: not supported
  (func (export "fd_advise") (param i32 i64 i64 i32) (result i32) (i32.const 52))
  (func (export "fd_allocate") (param i32 i64 i64) (result i32) (i32.const 52))
  (func (export "fd_fdstat_set_rights") (param i32 i64 i64) (result i32) (i32.const 52))
  (func (export "fd_filestat_get") (param i32 i32) (result i32) (i32.const 52))
  (func (export "fd_filestat_set_size") (param i32 i64) (result i32) (i32.const 52))
  (func (export "fd_filestat_set_times") (param i32 i64 i64 i32) (result i32) (i32.const 52))
  (func (export "fd_pread") (param i32 i32 i32 i64 i32) (result i32) (i32.const 52))
  (func (export "fd_pwrite") (param i32 i32 i32 i64 i32) (result i32) (i32.const 52))
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32) (i32.const 52))
  (func (export "fd_renumber") (param i32 i32) (result i32) (i32.const 52))
  (func (export "fd_seek") (param i32 i64 i32 i32) (result i32) (i32.const 52))
  (func (export "fd_tell") (param i32 i32) (result i32) (i32.const 52))
  (func (export "path_create_directory") (param i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_filestat_set_times") (param i32 i32 i32 i32 i64 i64 i32) (result i32) (i32.const 52))
  (func (export "path_link") (param i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_open") (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32) (i32.const 52))
  (func (export "path_readlink") (param i32 i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_remove_directory") (param i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_rename") (param i32 i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_symlink") (param i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "path_unlink_file") (param i32 i32 i32) (result i32) (i32.const 52))
  (func (export "sock_accept") (param i32 i32 i32) (result i32) (i32.const 52))
  (func (export "sock_recv") (param i32 i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "sock_send") (param i32 i32 i32 i32 i32) (result i32) (i32.const 52))
  (func (export "sock_shutdown") (param i32 i32) (result i32) (i32.const 52))
)
