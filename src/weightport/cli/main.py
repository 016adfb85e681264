"""The `weightport` command: parse arguments, call the public API, print results.

Exit codes: 0 success, 1 a conversion problem (the message says what and where), 2 a usage error.
Tracebacks are shown only with `--debug`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from weightport import api, distributed, families, synth, tools
from weightport.core.layouts import NAMES as LAYOUTS
from weightport.core.runtime import nbytes
from weightport.errors import WeightportError
from weightport.io.safetensors import parse_size

FORMATS = list(families.FAMILIES)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightport", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    def source_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("src", type=Path, help="an HF folder (config.json) or a native folder (metadata.yaml)")
        cmd.add_argument("--to", choices=api.SIDES, help="target side (default: the other side)")
        cmd.add_argument("--format", choices=FORMATS, metavar="NAME",
                         help="HF format; detected from config.json on import, recorded in native checkpoints "
                              "that weightport wrote, taken from --origin, else the only format that can describe "
                              f"the native architecture (one of: {', '.join(FORMATS)})")
        cmd.add_argument("--origin", type=Path, metavar="PATH",
                         help="export of a native checkpoint (one Fast-LLM saved): the HF model training started "
                              "from, as its HF folder or the native folder weightport wrote at import; its format, "
                              "config.json keys, layout and tokenizer files are restored, its architecture checked")
        cmd.add_argument("--modeling-code", type=Path, metavar="DIR",
                         help="export of a format whose HF classes are remote code (config.json auto_map): the "
                              "folder holding its modeling files, e.g. a Fast-LLM checkout's "
                              "fast_llm_external_models/apriel2; the files auto_map names and those they import "
                              "are copied into the output, in place of carried files of the same name")
        cmd.add_argument("--text-only", action="store_true",
                         help="export of a wrapper format (gemma4_vlm, mistral3, ...): the text model alone, as its "
                              "causal LM (gemma4_text, mistral, llama), without the carried vision and audio parts")
        cmd.add_argument("--dtype", default="auto", choices=["auto", *api.DTYPES],
                         help="output dtype (default auto: keep the source dtype)")
        cmd.add_argument("--hf-layout", choices=LAYOUTS,
                         help="config.json layout on export: transformers4 (`rope_theta`/`rope_scaling`), "
                              "transformers5 (`rope_parameters`; Gemma 4 `global_head_dim`) or transformers5.15 "
                              "(Gemma 4 `per_layer_config`); default: the layout the model was imported from, else "
                              "the format's default")

    convert = commands.add_parser("convert", help="convert a checkpoint folder")
    source_options(convert)
    convert.add_argument("dst", type=Path, help="output folder; created only when complete")
    convert.add_argument("--max-shard-size", default="5GB", type=_size, help="largest output file (default 5GB)")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.add_argument("--workers", type=int, default=2, help="threads (default 2: copies beside transforms)")
    convert.add_argument("--quiet", action="store_true", help="no progress bar (there is none when not a terminal)")
    plan = commands.add_parser("plan", help="print the conversion plan (reads headers only)")
    source_options(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    check = commands.add_parser("check", help="check that a conversion would be complete, writing nothing")
    source_options(check)
    inspect = commands.add_parser("inspect", help="what a checkpoint folder holds (reads headers only)")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--json", action="store_true", help="print as JSON")
    verify = commands.add_parser("verify", help="compare two checkpoints of any format as models")
    verify.add_argument("a", type=Path)
    verify.add_argument("b", type=Path)
    verify.add_argument("--atol", type=float, default=0.0, help="tolerated absolute difference (default: bitwise)")
    verify.add_argument("--format", choices=FORMATS, metavar="NAME", help="format of native checkpoints")
    verify.add_argument("--logits", action="store_true", help="also compare transformers outputs on a fixed prompt")
    demo = commands.add_parser("demo", help="write a tiny random Llama, convert it to native and back, compare")
    demo.add_argument("dir", type=Path, nargs="?", help="where to keep the checkpoints (default: a temp folder)")
    commands.add_parser("formats", help="list the formats")
    return parser


def _print_plan(plan: api.Plan) -> None:
    print(f"{plan.family} {plan.direction}: {len(plan.steps)} steps")
    for step in plan.steps:
        src = ", ".join(r.name for r in step.src)
        dst = ", ".join(f"{r.name} {list(r.shape)} {r.dtype}" for r in step.dst) or "(nothing: dropped)"
        print(f"  {step.op:<22} {src}\n  {'':<22} -> {dst}")
    for note in plan.notes:
        print(f"note: {note}")


def _progress(total: int, quiet: bool):  # noqa: ANN202 - a tqdm bar or None
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="converting", file=sys.stderr,
                dynamic_ncols=True)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _convert(args: argparse.Namespace, rank: int = 0) -> None:
    shard = args.max_shard_size
    start = time.perf_counter()
    source = api.open_checkpoint(args.src, args.format, origin=args.origin, text_only=args.text_only)
    plan = api.plan(source, to=args.to, dtype=args.dtype, hf_layout=args.hf_layout, modeling_code=args.modeling_code)
    total = sum(nbytes(r) for step in plan.steps for r in step.dst)
    bar = _progress(total, args.quiet or rank != 0)  # one display for the whole job
    try:
        plan = api.convert(source, args.dst, to=args.to, dtype=args.dtype, hf_layout=args.hf_layout,
                           max_shard_size=shard, overwrite=args.overwrite, workers=args.workers,
                           modeling_code=args.modeling_code,
                           progress=bar and (lambda step: bar.update(sum(nbytes(r) for r in step.dst))))
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return
    values = sum(math.prod(r.shape) for s in plan.steps for r in s.dst)
    for note in plan.notes:
        print(f"note: {note}")
    print(f"{plan.family} {plan.direction}: wrote {len(plan.steps)} steps ({values:,} values, {total / 1e9:.2f} GB) "
          f"to {args.dst} in {time.perf_counter() - start:.2f}s")


def _inspect(args: argparse.Namespace) -> None:
    info = tools.inspect(args.path)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    kind = info["side"] + (f" ({info['native_model']})" if info["side"] == "native" else "")
    fmt = info["format"] or ("not recorded; can be " + (", ".join(info["formats"]) or "none") if "formats" in info
                             else "unknown")
    print(f"{info['path']}: {kind} checkpoint, format {fmt}")
    print(f"  tensors     {info['tensors']:,}")
    print(f"  parameters  {info['parameters']:,}")
    print(f"  dtypes      {', '.join(f'{k} x{v:,}' for k, v in info['dtypes'].items())}")
    print(f"  on disk     {info['bytes']:,} bytes")
    print(f"  shards      {len(info['shards'])}: {', '.join(info['shards'][:4])}"
          f"{' ...' if len(info['shards']) > 4 else ''}")
    if info["carried"]:
        print(f"  carries     {', '.join(info['carried'])}")
    for part, (count, size) in info.get("carried_tensors", {}).items():
        print(f"  carried     {part}: {count:,} HF tensors, {size:,} bytes")
    if info.get("other_shards"):
        print(f"  also        optimizer shards {', '.join(info['other_shards'])} (not converted)")


def _verify(args: argparse.Namespace) -> int:
    differences = tools.verify(args.a, args.b, atol=args.atol, format_a=args.format, format_b=args.format)
    if args.logits and not differences:
        first, second = (tools.logits(c) for c in tools.open_pair(args.a, args.b, args.format, args.format))
        gap = float((first - second).abs().max())
        if gap > args.atol:
            differences.append(tools.Difference("logits", f"max abs difference {gap:.3g}"))
    if differences:
        print(f"{args.a} and {args.b} differ ({len(differences)}):")
        for difference in differences:
            print(f"  {difference}")
        return 1
    print(f"{args.a} and {args.b} hold the same model" + (" and give the same logits" if args.logits else ""))
    return 0


def _demo(folder: Path | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="weightport-demo-")) if folder is None else folder
    hf, native, back = root / "hf", root / "native", root / "hf_roundtrip"
    synth.write_hf(hf, synth.tiny_llama(), seed=0)
    print(f"wrote a tiny random Llama HF checkpoint: {hf}")
    plan = api.convert(hf, native)
    print(f"converted hf -> native ({len(plan.steps)} steps): {native}")
    plan = api.convert(native, back)
    print(f"converted native -> hf ({len(plan.steps)} steps): {back}")
    differences = tools.verify(hf, back)
    same_config = json.loads((hf / "config.json").read_text()) == json.loads((back / "config.json").read_text())
    print(f"round trip: {tools.inspect(back)['tensors']} tensors {'bit-exact' if not differences else 'DIFFER'}, "
          f"config.json {'identical' if same_config else 'DIFFERS'}")
    if differences or not same_config:
        raise SystemExit(1)


def _run(args: argparse.Namespace, group: distributed.Group | None) -> int:
    """Run one command; its exit code."""
    if args.command == "convert":
        _convert(args, group.rank if group else 0)
    elif args.command == "plan":
        plan = api.plan(args.src, to=args.to, format=args.format, dtype=args.dtype, hf_layout=args.hf_layout,
                        origin=args.origin, modeling_code=args.modeling_code, text_only=args.text_only)
        print(json.dumps(plan.as_dict(), indent=2)) if args.json else _print_plan(plan)
    elif args.command == "check":
        plan = api.check(args.src, to=args.to, format=args.format, dtype=args.dtype, hf_layout=args.hf_layout,
                         origin=args.origin, modeling_code=args.modeling_code, text_only=args.text_only)
        produced = sum(len(s.dst) for s in plan.steps)
        for note in plan.notes:
            print(f"note: {note}")
        print(f"{plan.family} {plan.direction}: complete: every source tensor is consumed once and "
              f"{produced:,} tensors are produced once ({len(plan.steps)} steps); config covered")
    elif args.command == "inspect":
        _inspect(args)
    elif args.command == "verify":
        return _verify(args)
    elif args.command == "demo":
        _demo(args.dir)
    else:
        specs = [families.load(name) for name in FORMATS]
        width = max(len(spec.model_type) for spec in specs)
        for spec in specs:
            print(f"{spec.name:<18} model_type {spec.model_type:<{width}}  {spec.architecture} "
                  f"({spec.native_model})")
            if spec.text is not None:
                parts = ", ".join(tools.carried_parts(spec)) or "nothing"
                print(f"{'':<18} converts its {spec.text[0]} (default format {spec.text[1]}), carries {parts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    group = None
    try:
        with distributed.stop_on_signals():  # SIGTERM, SIGHUP: cleaned up as after Ctrl-C
            if args.command == "convert":
                group = distributed.start_from_environment()  # under torchrun: one part of the job
            return _run(args, group)
    except WeightportError as err:
        if args.debug:
            raise
        if group is None or group.rank == 0 or getattr(err, "lost", False):  # the first process says what failed
            where = f"process {group.rank}: " if group is not None and group.rank else ""
            print(f"weightport: error: {where}{err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("weightport: interrupted; nothing was written", file=sys.stderr)
        return 130
    except distributed.Stopped as stop:
        print(f"weightport: stopped by {stop.name}; nothing was written", file=sys.stderr)
        return stop.code
    finally:
        if group is not None:
            distributed.stop()


if __name__ == "__main__":
    sys.exit(main())
