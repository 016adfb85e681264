"""Plans: the flat, inspectable list of tensor steps of one conversion, built from file headers alone.

`build` checks coverage while it plans, and collects every problem before raising: each source tensor is
consumed exactly once, each destination tensor produced exactly once, every native parameter of the config
exists with the shape the config implies, and every HF tensor has the shape the rules derive from it. Where the
rules offer alternative HF layouts, `choose` picks the one the source holds; an HF tensor that is a tied copy of
another becomes a step that checks the two equal (at run time) and writes nothing. The HF tensors under a `Carry`
prefix that no other rule reads become `carry` steps: copied unchanged, to the names they are kept under natively
on import, and back to their HF names on export.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from weightport.core.ops import hf_shape
from weightport.core.weights import Binding
from weightport.errors import CoverageError, SpecError, report

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ref:
    """A tensor by name, shape and safetensors dtype code."""

    name: str
    shape: Shape
    dtype: str


@dataclass(frozen=True, slots=True)
class Step:
    """Read `src`, apply `binding`'s ops in the plan's direction, write `dst`. A step without `dst` is a check: its
    `src` are a tied copy and its original, which must be bit-equal; the copy is dropped."""

    src: tuple[Ref, ...]
    dst: tuple[Ref, ...]
    binding: Binding

    @property
    def op(self) -> str:
        if not self.dst:
            return "check equal + drop"
        if self.binding.carried:
            return "carry"
        ops = [str(op) for op in self.binding.ops]
        many = len(self.binding.hf) > 1
        if many:
            ops.append(f"concat(dim={self.binding.dim})" if len(self.src) > 1 else f"split(dim={self.binding.dim})")
        if self.src[0].dtype != self.dst[0].dtype:
            ops.append(f"cast({self.dst[0].dtype})")
        return " + ".join(ops) or "rename"


@dataclass(frozen=True)
class Plan:
    """Every tensor step of a conversion, plus the destination config and notes for the user."""

    family: str
    direction: str  # "from_hf" or "to_hf"
    steps: tuple[Step, ...]
    config: dict = field(repr=False)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        refs = lambda rs: [{"name": r.name, "shape": list(r.shape), "dtype": r.dtype} for r in rs]  # noqa: E731
        return {
            "family": self.family,
            "direction": self.direction,
            "notes": list(self.notes),
            "steps": [{"op": s.op, "src": refs(s.src), "dst": refs(s.dst)} for s in self.steps],
            "config": self.config,
        }


def group(names: list[str]) -> list[str]:
    """Names with layer indices folded: `model.layers.{0..31}.mlp.up_proj.weight`."""
    buckets: dict[str, list[int]] = defaultdict(list)
    for name in names:
        match = re.search(r"\.(\d+)\.", name)
        if match:
            buckets[name[: match.start(1)] + "{}" + name[match.end(1) :]].append(int(match.group(1)))
        else:
            buckets[name].append(-1)
    out = []
    for key, indices in buckets.items():
        if len(indices) == 1:
            out.append(key if indices == [-1] else key.replace("{}", str(indices[0])))
        else:
            idx = sorted(indices)
            span = (f"{idx[0]}..{idx[-1]}" if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1
                    else ",".join(map(str, idx)))
            out.append(key.replace("{}", "{" + span + "}"))
    return sorted(out)


def _brief(names: list[str], limit: int = 3) -> str:
    folded = group(names)
    return ", ".join(folded[:limit]) + (f" and {len(folded) - limit} more" if len(folded) > limit else "")


def site_names(names: list[str]) -> str:
    """`Alternatives` sites for messages: `native decoder.{0..1}.mlp`; the site at the top of a table (`""`) is the
    whole model."""
    named = group([n for n in names if n])
    whole = ["the whole model"] if "" in names else []
    return " and ".join(whole + ([f"native {', '.join(named)}"] if named else []))


def choose(bindings: list[Binding], holds: Callable[[str], bool] | None = None, prefer: str | None = None
           ) -> tuple[list[Binding], list[str], list[str]]:
    """Keep one option of each `Alternatives` site: without `holds`, the option named `prefer` where the site has
    one, else the first (the layout an export writes); with `holds`, the first whose HF tensors `holds` all (bindings
    outside the native model already left out). Returns the kept
    bindings, notes on sites read in another option than the first, and one problem line for the sites no option
    fits (with what each option lacks); there the option holding most tensors is kept, so that the usual coverage
    lines say the rest."""
    sites: dict[str, dict[str, list[Binding]]] = defaultdict(dict)
    for b in bindings:
        if b.alternative is not None:
            sites[b.alternative[0]].setdefault(b.alternative[1], []).append(b)
    chosen: dict[str, str] = {}
    unfit: list[str] = []
    lacking: dict[str, list[str]] = defaultdict(list)
    for site, options in sites.items():
        names = {option: [h for b in bs if not b.carried for h in b.hf] for option, bs in options.items()}
        if holds is None:
            chosen[site] = prefer if prefer in options else next(iter(options))
            continue
        fits = [option for option, hf in names.items() if all(map(holds, hf))]
        if fits:
            chosen[site] = fits[0]
            continue
        unfit.append(site)
        chosen[site] = max(names, key=lambda option: sum(map(holds, names[option])))  # first of equals
        for option, hf in names.items():
            lacking[option] += [h for h in hf if not holds(h)]
    kept = [b for b in bindings if b.alternative is None or chosen[b.alternative[0]] == b.alternative[1]]
    others = defaultdict(list)
    for site, option in chosen.items():
        if site not in unfit and option != next(iter(sites[site])):
            others[(option, next(iter(sites[site])))].append(site)
    notes = [f"{site_names(where)}: read from HF layout {option!r} (an export writes {first!r})"
             for (option, first), where in others.items()]
    problems = [f"no HF layout of {site_names(unfit)} is complete: "
                + "; ".join(f"{option!r} lacks {_brief(names)}" for option, names in lacking.items())] if unfit else []
    return kept, notes, problems


def tied_copies(bound: list[Binding], absent: list[Binding]) -> list[tuple[Binding, Binding]]:
    """`(copy, original)` for each binding of a native tensor the model lacks (`absent`) that is `tied` to one it has
    (bound in `bound`) in the same HF layout: an `Alternatives` option pairs only with itself. Once a plan has chosen
    its options, each copy has one original; before (in a stream), a copy that every option names alike has one
    original per option. Raises SpecError unless both are single tensors."""
    by_native = defaultdict(list)
    for b in bound:
        by_native[b.native].append(b)
    out = []
    for copy in absent:
        for original in by_native.get(copy.tied, ()):
            a, b = copy.alternative, original.alternative
            if a is not None and b is not None and a[0] == b[0] and a != b:
                continue
            if len(copy.hf) != 1 or len(original.hf) != 1:
                raise SpecError(f"weight rule {copy.native}: a tied copy and its original {copy.tied} must each be "
                                "one HF tensor")
            out.append((copy, original))
    return out


def not_a_copy(copy: str, original: str, detail: str) -> str:
    """The error message for a tied copy that is not its original."""
    return (f"{copy} differs from {original} ({detail}): the checkpoint is not tied as its config says, and a tied "
            f"native model keeps only one of them. If both are weights of the model, set tie_word_embeddings to false "
            f"in config.json; if {original} is the one to keep, remove {copy} from the checkpoint")


def _part_sizes(binding: Binding, shape: Shape) -> list[int] | None:
    count = len(binding.hf)
    if binding.sizes is not None:
        return (list(binding.sizes) if sum(binding.sizes) == shape[binding.dim] and len(binding.sizes) == count
                else None)
    total = shape[binding.dim] if shape else 0
    return [total // count] * count if shape and total % count == 0 else None


def _hf_shapes(binding: Binding, shape: Shape, sizes: list[int]) -> list[Shape]:
    dim = binding.dim % len(shape)
    return [hf_shape(binding.ops, shape[:dim] + (size,) + shape[dim + 1 :]) for size in sizes]


def _carrier(carries: list[Binding], name: str, side: int) -> Binding | None:
    """The carried binding whose prefix (side 0: native, 1: HF) `name` lies under, the longest first."""
    under = [b for b in carries if name.startswith((b.native, b.hf[0])[side] + ".")]
    return max(under, key=lambda b: len((b.native, b.hf[0])[side]), default=None)


def build(family: str, direction: str, bindings: list[Binding], inventory: dict[str, Shape],
          sources: dict[str, Ref], dtype: str | None, config: dict, notes: tuple[str, ...] = (),
          carried: dict[str, Ref] | None = None) -> Plan:
    """Plan a conversion: `inventory` is the native model's parameters for the config, `sources` the tensors found
    in the source files (native names without the `/weights` suffix), `dtype` an optional output dtype code (carried
    tensors keep theirs). On export, `carried` holds the HF tensors kept beside the native model (`Carry`), by the
    names they are kept under."""
    missing, extra, shapes, twice, other = [], [], [], [], []
    holds = (lambda name: name in sources) if direction == "from_hf" else None
    active, layout_notes, unfit = choose([b for b in bindings if b.native in inventory or b.carried], holds)
    carries = [b for b in active if b.carried]
    active = [b for b in active if not b.carried]
    notes += tuple(layout_notes)
    bound = defaultdict(list)
    for b in active:
        bound[b.native].append(b)
    other += [f"native tensor {n} is produced by {len(bs)} rules" for n, bs in bound.items() if len(bs) > 1]
    other += [f"native tensor {n} {list(s)} has no rule in {family}" for n, s in inventory.items() if n not in bound]
    if direction == "to_hf":
        missing += [n for n in inventory if n not in sources]
        extra += [n for n in sources if n not in inventory]
        shapes += [f"{n}: file has {list(sources[n].shape)}, config implies {list(s)}"
                   for n, s in inventory.items() if n in sources and sources[n].shape != s]
    steps, seen_hf = [], {}
    for b in active:
        shape = inventory[b.native]
        sizes = _part_sizes(b, shape)
        if sizes is None:
            other.append(f"{b.native} {list(shape)} cannot be split into {len(b.hf)} parts of "
                         f"{b.sizes or 'equal size'}")
            continue
        hf_refs = []
        for name, hshape in zip(b.hf, _hf_shapes(b, shape, sizes)):
            if name in seen_hf:
                twice.append(f"{name} (by {seen_hf[name]} and {b.native})")
            seen_hf[name] = b.native
            if direction == "from_hf":
                if name not in sources:
                    missing.append(name)
                    continue
                if sources[name].shape != hshape:
                    shapes.append(f"{name}: file has {list(sources[name].shape)}, config implies {list(hshape)}")
                hf_refs.append(sources[name])
            else:
                hf_refs.append(Ref(name, hshape, ""))
        if direction == "from_hf":
            if len(hf_refs) != len(b.hf):
                continue
            kinds = {r.dtype for r in hf_refs}
            if len(kinds) > 1:
                other.append(f"{b.native} is made of HF tensors of different dtypes {sorted(kinds)}")
            steps.append(Step(tuple(hf_refs), (Ref(b.native, shape, dtype or hf_refs[0].dtype),), b))
        elif b.native in sources:
            src = sources[b.native]
            out = dtype or src.dtype
            steps.append(Step((src,), tuple(Ref(r.name, r.shape, out) for r in hf_refs), b))
    checks = []
    chosen = {b.alternative[0]: b.alternative[1] for b in active + carries if b.alternative is not None}
    crossed: dict[tuple[str, str], list[str]] = defaultdict(list)  # carried tensors named as an option not chosen
    if direction == "from_hf":
        for tied, to in tied_copies(active, [b for b in bindings if b.native not in inventory]):
            copy, original = tied.hf[0], to.hf[0]
            if copy not in sources or original not in sources:
                continue
            seen_hf[copy] = original
            a, b = sources[copy], sources[original]
            if (a.shape, a.dtype) != (b.shape, b.dtype):
                other.append(f"{copy} {list(a.shape)} {a.dtype} cannot be a tied copy of {original} "
                             f"{list(b.shape)} {b.dtype}; if it is a weight of its own, set tie_word_embeddings to "
                             "false in config.json")
                continue
            checks.append(Step((a, b), (), tied))
            notes += (f"{copy} is a tied copy of {original} (as config.json says): the conversion checks that it is "
                      "bit-equal before anything is written, then drops it",)
        elsewhere = [b for b in bindings if b.carried and b.alternative is not None and b not in carries]
        for name in [n for n in sources if n not in seen_hf]:
            b = _carrier(carries, name, 1)
            if b is None:
                other_layout = _carrier(elsewhere, name, 1)  # a carried part named as another layout names it
                if other_layout is not None and other_layout.alternative[0] in chosen:
                    crossed[other_layout.alternative].append(name)
                else:
                    extra.append(name)
                continue
            src = sources[name]
            steps.append(Step((src,), (Ref(b.native + name[len(b.hf[0]):], src.shape, src.dtype),), b))
    else:
        for name, src in (carried or {}).items():
            b = _carrier(carries, name, 0)
            if b is None:
                other.append(f"carried tensor {name} lies in no part that {family} carries "
                             f"({', '.join(b.native for b in carries) or 'none'})")
                continue
            hf_name = b.hf[0] + name[len(b.native):]
            if hf_name in seen_hf:
                twice.append(f"{hf_name} (by {seen_hf[hf_name]} and the carried {name})")
            seen_hf[hf_name] = name
            steps.append(Step((src,), (Ref(hf_name, src.shape, src.dtype),), b))
    problems = (
        unfit
        + [f"missing tensor: {n}" for n in group(missing)]
        + [f"tensor claimed by no rule: {n}" for n in group(extra)]
        + [f"{len(names)} tensor(s) of carried parts named as in HF layout {option!r} of {site_names([site])}, the "
           f"other tensors as in layout {chosen[site]!r}: name them all one way ({_brief(names)})"
           for (site, option), names in crossed.items()]
        + [f"wrong shape: {s}" for s in shapes]
        + [f"tensor claimed twice: {s}" for s in twice]
        + other
    )
    if problems:
        side = "HF" if direction == "from_hf" else "native"
        raise CoverageError(report(
            f"{family} {direction}: the {side} tensors do not match the config", problems,
            "check that the checkpoint and its config belong together and that --format is right"))
    return Plan(family, direction, tuple(checks + steps), config, notes)
