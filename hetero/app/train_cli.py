"""hetero prune, distill, adapt: compress a model and keep it current (the optional train extra).

Only these commands import hetero.train (and with it torch); without torch each says, in one line,
how to install it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hetero.app.options import nonnegative_int, positive_float
from hetero.errors import InputError

DATA_HELP = "training data: digits, digits:inverted, digits:shifted, or an .npz with arrays x and y (split 80/20 into train and held-out)"


def add_train_parsers(sub: Any) -> None:
    p = sub.add_parser("prune", help="structured pruning by L1 norm (filters, channels, neurons), then fine-tune")
    p.add_argument("model", help="an fp32 .onnx path or builtin:NAME")
    p.add_argument("--ratio", type=float, required=True, help="share of the channels of each prunable layer to remove, in [0, 1)")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model (.onnx)")
    p.add_argument("--data", help=DATA_HELP + " (default: digits, for a model taking 1x1x28x28)")
    p.add_argument("--finetune-epochs", type=nonnegative_int, default=3, help="fine-tuning epochs after pruning (default: 3; 0: none)")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="fine-tuning learning rate (Adam)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true", help="print FLOPs, parameters, accuracy before and after as JSON")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("distill", help="knowledge distillation: train a small student on a teacher's soft outputs")
    p.add_argument("--teacher", required=True, help="the teacher: an fp32 .onnx path or builtin:NAME")
    p.add_argument("--student", required=True, help="the student: an fp32 .onnx path or builtin:NAME (e.g. builtin:seed-cnn-tiny)")
    p.add_argument("-o", "--output", required=True, help="where to write the trained student (.onnx)")
    p.add_argument("--data", help=DATA_HELP + " (default: digits, for models taking 1x1x28x28)")
    p.add_argument("--temperature", type=positive_float, default=4.0, help="T, softening both models' logits (default 4)")
    p.add_argument("--alpha", type=float, default=1.0, help="lambda, the weight of the T^2 KL term (default 1)")
    p.add_argument("--epochs", type=nonnegative_int, default=20)
    p.add_argument("--lr", type=positive_float, default=3e-3)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true", help="print the teacher's and the student's accuracy and FLOPs as JSON")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("adapt", help="incremental learning: update only the parameter groups the new data moves (eq. 5)")
    p.add_argument("model", help="an fp32 .onnx path or builtin:NAME")
    p.add_argument("--data", required=True, help="the new data: " + DATA_HELP)
    p.add_argument("-o", "--output", required=True, help="where to write the adapted model (.onnx)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--epsilon", type=float, help="update the groups whose mean gradient norm g_i is >= this")
    choice.add_argument("--fraction", type=float, help="update the groups of largest g_i holding this share of the parameters (default 0.5)")
    p.add_argument("--replay", help="old data replayed among the new against forgetting (same forms as --data); "
                                    "its held-out part scores the old accuracy")
    p.add_argument("--old", help="old held-out data to score (default: --replay's, else the digits for a 1x1x28x28 model)")
    p.add_argument("--reg", type=float, default=1e-4, help="weight of the L2 pull of updated parameters to their old values")
    p.add_argument("--epochs", type=nonnegative_int, default=5)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true", help="print accuracies before and after on new and old data and updated_fraction")
    p.set_defaults(func=cmd_adapt)


def _start(command: str, output: str):
    """Torch present, the output path writable: the OutputSet for -o (nothing trains before both hold)."""
    from hetero.io import OutputSet
    from hetero.train import require_torch

    require_torch(command)
    if not str(output).endswith(".onnx"):
        raise InputError(f"-o {output}: the model is written as ONNX; end the name in .onnx")
    return OutputSet({"-o": output})


def _finish(outputs: Any, model: Any, summary: dict[str, Any], as_json: bool, lines: list[str]) -> int:
    outputs.put("-o", model.SerializeToString())
    outputs.commit()
    summary["output"] = str(outputs.path("-o"))
    if as_json:
        print(json.dumps(summary))
    else:
        print("\n".join([*lines, f"wrote {outputs.path('-o')}"]))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    outputs = _start("prune", args.output)
    from hetero.ir.source import load_onnx
    from hetero.train.compress import default_data, prune_and_finetune

    model = load_onnx(args.model)
    data = default_data(model, args.data, args.model)
    run = prune_and_finetune(model, args.ratio, data, args.finetune_epochs, args.lr, args.seed, label=args.model)
    s = run.to_dict()
    lines = [f"FLOPs {s['flops_before']:,} -> {s['flops_after']:,} ({s['flops_ratio']:.0%}); "
             f"parameters {s['params_before']:,} -> {s['params_after']:,}",
             f"held-out accuracy on {data.name}: {s['accuracy_before']:.2%} -> {s['accuracy_after']:.2%}",
             f"{len(run.spaces)} channel groups pruned"]
    return _finish(outputs, run.model, {"model": args.model, "ratio": args.ratio, "data": data.name, **s}, args.json, lines)


def cmd_distill(args: argparse.Namespace) -> int:
    outputs = _start("distill", args.output)
    from hetero.ir.source import load_onnx
    from hetero.train.compress import default_data
    from hetero.train.distill import distill

    teacher, student = load_onnx(args.teacher), load_onnx(args.student)
    data = default_data(teacher, args.data, args.teacher)
    result = distill(teacher, student, data, args.epochs, args.temperature, args.alpha, args.lr, args.seed)
    s = result.to_dict()
    lines = [f"teacher {args.teacher}: accuracy {s['teacher_accuracy']:.2%}, {s['teacher_flops']:,} FLOPs",
             f"student {args.student}: accuracy {s['student_accuracy']:.2%}, {s['student_flops']:,} FLOPs "
             f"({s['flops_ratio']:.0%} of the teacher's)"]
    summary = {"teacher": args.teacher, "student": args.student, "data": data.name, "temperature": args.temperature,
               "alpha": args.alpha, **s}
    return _finish(outputs, result.model, summary, args.json, lines)


def cmd_adapt(args: argparse.Namespace) -> int:
    outputs = _start("adapt", args.output)
    from hetero.ir.source import load_onnx
    from hetero.train.adapt import adapt
    from hetero.train.compress import DIGITS_INPUT
    from hetero.train.data import DIGITS, load_data

    model = load_onnx(args.model)
    new = load_data(args.data)
    replay = load_data(args.replay) if args.replay else None
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    old_spec = args.old or args.replay or (DIGITS if dims == DIGITS_INPUT else None)
    old = load_data(old_spec) if old_spec else None
    fraction = args.fraction if args.fraction is not None or args.epsilon is not None else 0.5
    result = adapt(model, new, replay, old, args.epsilon, fraction, args.epochs, args.lr, args.reg, args.seed)
    s = result.to_dict()
    lines = [f"new data {new.name}: accuracy {s['accuracy_new_before']:.2%} -> {s['accuracy_new_after']:.2%}"]
    if old is not None:
        lines.append(f"old data {old.name}: accuracy {s['accuracy_old_before']:.2%} -> {s['accuracy_old_after']:.2%}")
    lines.append(f"updated {s['updated_groups']} of {s['groups']} parameter groups ({s['updated_fraction']:.1%} of the parameters)")
    summary = {"model": args.model, "data": new.name, "old": old.name if old is not None else None,
               "replay": replay.name if replay is not None else None, **s}
    return _finish(outputs, result.model, summary, args.json, lines)
