;; light: the stream example's held-stream behaviour with no language runtime in the guest.
;;
;; Answers 200 and then writes 16 bytes of the stream example's pattern (byte k is k % 256) every
;; second until a write fails (the client left), whatever the request. Built by bench/light_guest.py
;; (`wasm-tools component embed` with world.wit, then `component new`) and run by
;; `python -m bench.held_streams` in edgefn and in `wasmtime serve`: 1,000 held streams of a guest
;; whose instance is a page of memory show what the host costs per stream, where a componentize-py
;; guest's own ~10 MB would hide it. Import and export names are the component model's `cm32p2`
;; core ABI names, as `wasm-tools component embed --dummy` prints them for world.wit.
(module
  (import "cm32p2|wasi:http/types@0.2" "[constructor]fields" (func $fields_new (result i32)))
  (import "cm32p2|wasi:http/types@0.2" "[constructor]outgoing-response" (func $resp_new (param i32) (result i32)))
  (import "cm32p2|wasi:http/types@0.2" "[method]outgoing-response.body" (func $resp_body (param i32 i32)))
  (import "cm32p2|wasi:http/types@0.2" "[static]response-outparam.set" (func $out_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "cm32p2|wasi:http/types@0.2" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
  (import "cm32p2|wasi:http/types@0.2" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
  (import "cm32p2|wasi:http/types@0.2" "incoming-request_drop" (func $req_drop (param i32)))
  (import "cm32p2|wasi:io/streams@0.2" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
  (import "cm32p2|wasi:io/streams@0.2" "output-stream_drop" (func $stream_drop (param i32)))
  (import "cm32p2|wasi:clocks/monotonic-clock@0.2" "subscribe-duration" (func $sleep_for (param i64) (result i32)))
  (import "cm32p2|wasi:io/poll@0.2" "[method]pollable.block" (func $block (param i32)))
  (import "cm32p2|wasi:io/poll@0.2" "pollable_drop" (func $pollable_drop (param i32)))
  (memory (export "cm32p2_memory") 1)
  (func (export "cm32p2_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "cm32p2|wasi:http/incoming-handler@0.2|handle") (param $req i32) (param $out i32)
    (local $resp i32) (local $body i32) (local $stream i32) (local $k i32) (local $i i32) (local $p i32)
    (call $req_drop (local.get $req))
    (local.set $resp (call $resp_new (call $fields_new)))
    (call $resp_body (local.get $resp) (i32.const 0))
    (local.set $body (i32.load (i32.const 4)))
    (call $out_set (local.get $out) (i32.const 0) (local.get $resp) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $body_write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load (i32.const 4)))
    (loop $chunks
      (local.set $i (i32.const 0))
      (loop $fill
        (i32.store8 (i32.add (i32.const 64) (local.get $i)) (i32.add (local.get $k) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $i) (i32.const 16))))
      (local.set $k (i32.add (local.get $k) (i32.const 16)))
      (call $write (local.get $stream) (i32.const 64) (i32.const 16) (i32.const 0))
      (if (i32.eqz (i32.load8_u (i32.const 0)))
        (then
          (local.set $p (call $sleep_for (i64.const 1000000000)))
          (call $block (local.get $p))
          (call $pollable_drop (local.get $p))
          (br $chunks))))
    (call $stream_drop (local.get $stream))
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 0))))
