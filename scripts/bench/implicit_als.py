#!/usr/bin/env python3
"""Peer side of `kizuna bench recs`: train the Python `implicit` library's ALS and write top-k recommendations.

The Rust side writes the training file, runs this script, reads RECS.tsv and computes every metric itself, so
this script only trains, recommends and times the training.

    python implicit_als.py --train TRAIN.tsv --users N --items M --out RECS.tsv --k 100 \
        [--factors 64] [--regularization 0.01] [--alpha 1.0] [--iterations 15] [--threads 2] [--seed 1]

TRAIN.tsv: no header, lines `user<TAB>item<TAB>weight`, 0-based integer ids (user < N, item < M), weight a
positive finite float. Duplicate (user, item) pairs are summed.

Model: implicit's CPU AlternatingLeastSquares (conjugate-gradient solver, implicit's defaults). Confidence
follows implicit's convention: C_ui = alpha * weight for observed pairs (preference 1), C_ui = 1 and preference
0 for every unobserved pair. Note that this is not Hu et al.'s 1 + alpha * weight: with alpha = 1 and unit
weights an observed pair has the same confidence as an unobserved one and only the preference differs.

RECS.tsv: one line per user that has at least one training interaction, `user<TAB>item1,item2,...` with k 0-based
item ids, best first, none of them in that user's training set (fewer than k only for a user with fewer than k
unseen items: then all of them).

stdout: exactly one JSON line {"train_seconds": float, "implicit_version": str, "params": {...}}, where
train_seconds is the wall-clock time of model.fit() alone. Everything else goes to stderr. Exit status 2 on bad
arguments or input, 1 on any other failure.
"""

import os

# implicit runs its own thread pool; a multi-threaded BLAS underneath it oversubscribes the cores (and implicit
# warns). These must be set before numpy (and its BLAS) is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402


class InputError(Exception):
    """Bad arguments or a bad training file: reported on stderr with exit status 2."""


def log(msg):
    print(f"implicit_als: {msg}", file=sys.stderr, flush=True)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def finite_float(minimum, inclusive):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        if not ok:
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"expected a finite number {bound} {minimum}, got {text}")
        return value

    return parse


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train implicit's CPU ALS on a user-item TSV and write top-k recommendations per user."
    )
    p.add_argument("--train", required=True, help="training TSV: user<TAB>item<TAB>weight, 0-based ids, no header")
    p.add_argument("--users", required=True, type=positive_int, help="number of users N (ids 0..N-1)")
    p.add_argument("--items", required=True, type=positive_int, help="number of items M (ids 0..M-1)")
    p.add_argument("--out", required=True, help="output TSV: user<TAB>item1,item2,... best first")
    p.add_argument("--k", required=True, type=positive_int, help="recommendations per user")
    p.add_argument("--factors", type=positive_int, default=64)
    p.add_argument("--regularization", type=finite_float(0.0, True), default=0.01)
    p.add_argument("--alpha", type=finite_float(0.0, False), default=1.0, help="confidence = alpha * weight")
    p.add_argument("--iterations", type=positive_int, default=15)
    p.add_argument("--threads", type=non_negative_int, default=2, help="implicit's threads (0 = all cores)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random_state of the model")
    return p.parse_args(argv)


def read_train(path, n_users, n_items):
    """Returns (users, items, weights) as Python lists after checking every line."""
    users, items, weights = [], [], []
    try:
        f = open(path, "r", encoding="utf-8", newline="")
    except OSError as e:
        raise InputError(f"cannot open training file {path!r}: {e.strerror}")
    with f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise InputError(
                    f"{path}:{lineno}: expected 3 tab-separated fields user<TAB>item<TAB>weight, "
                    f"got {len(fields)}: {line[:80]!r}"
                )
            try:
                u = int(fields[0])
                i = int(fields[1])
            except ValueError:
                raise InputError(f"{path}:{lineno}: user and item must be integers, got {line[:80]!r}")
            try:
                w = float(fields[2])
            except ValueError:
                raise InputError(f"{path}:{lineno}: weight must be a number, got {fields[2][:40]!r}")
            if not 0 <= u < n_users:
                raise InputError(f"{path}:{lineno}: user {u} out of range 0..{n_users - 1} (--users {n_users})")
            if not 0 <= i < n_items:
                raise InputError(f"{path}:{lineno}: item {i} out of range 0..{n_items - 1} (--items {n_items})")
            if not (math.isfinite(w) and w > 0):
                raise InputError(f"{path}:{lineno}: weight must be a positive finite number, got {fields[2]!r}")
            users.append(u)
            items.append(i)
            weights.append(w)
    if not users:
        raise InputError(f"training file {path!r} has no interactions")
    return users, items, weights


def run(args):
    import numpy as np
    import scipy
    import scipy.sparse as sp
    import implicit
    from implicit.cpu.als import AlternatingLeastSquares

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise InputError(f"output directory {out_dir!r} does not exist")
    users, items, weights = read_train(args.train, args.users, args.items)
    n_lines = len(users)

    # COO -> CSR sums duplicate (user, item) pairs. Sum in float64, then store float32 as implicit wants.
    coo = sp.coo_matrix(
        (np.asarray(weights, dtype=np.float64), (np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))),
        shape=(args.users, args.items),
    )
    user_items = coo.tocsr()
    user_items.sum_duplicates()
    user_items.sort_indices()
    user_items = user_items.astype(np.float32)
    del users, items, weights, coo

    ctor = inspect.signature(AlternatingLeastSquares.__init__).parameters
    kwargs = dict(
        factors=args.factors,
        regularization=args.regularization,
        iterations=args.iterations,
        random_state=args.seed,
        num_threads=args.threads,
    )
    if "alpha" in ctor:
        kwargs["alpha"] = args.alpha
        alpha_applied = "constructor"
        fit_matrix = user_items
    else:  # implicit < 0.7 has no alpha: scale the confidences ourselves
        alpha_applied = "matrix"
        fit_matrix = (user_items * np.float32(args.alpha)).astype(np.float32)
    if "calculate_training_loss" in ctor:
        kwargs["calculate_training_loss"] = False
    model = AlternatingLeastSquares(**kwargs)

    start = time.perf_counter()
    model.fit(fit_matrix, show_progress=False)
    train_seconds = time.perf_counter() - start

    # Recommend for every user with at least one training interaction; the rows passed along are those users'
    # training items, which filter_already_liked_items excludes.
    row_nnz = np.diff(user_items.indptr)
    userids = np.flatnonzero(row_nnz > 0).astype(np.int32)
    k = min(args.k, args.items)
    start = time.perf_counter()
    ids, _scores = model.recommend(userids, user_items[userids], N=k, filter_already_liked_items=True)
    recommend_seconds = time.perf_counter() - start
    ids = np.asarray(ids)

    # implicit 0.7's topk does not drop filtered items when N exceeds a user's number of unseen items: it fills the
    # tail of the row with the user's own training items instead. Drop those (and any -1 padding) here, so a
    # line never holds a training item; such a user gets every unseen item, fewer than k.
    leaked = 0
    short_users = 0
    tmp_path = args.out + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as out:
        for row, u in enumerate(userids):
            recs = ids[row]
            recs = recs[recs >= 0]
            seen = user_items.indices[user_items.indptr[u] : user_items.indptr[u + 1]]
            keep = ~np.isin(recs, seen)
            if not keep.all():
                leaked += int((~keep).sum())
                recs = recs[keep]
            if len(recs) < k:
                short_users += 1
            out.write(f"{int(u)}\t{','.join(map(str, recs.tolist()))}\n")
    os.replace(tmp_path, args.out)
    if short_users:
        log(
            f"{short_users} users have fewer than {k} unseen items; their lines are shorter "
            f"({leaked} training items that implicit returned despite filter_already_liked_items were dropped)"
        )

    result = {
        "train_seconds": train_seconds,
        "implicit_version": implicit.__version__,
        "params": {
            "model": "implicit.cpu.als.AlternatingLeastSquares",
            "factors": args.factors,
            "regularization": args.regularization,
            "alpha": args.alpha,
            "alpha_applied": alpha_applied,
            "confidence": "alpha * weight (unobserved: 1)",
            "iterations": args.iterations,
            "threads": args.threads,
            "seed": args.seed,
            "k": k,
            "use_cg": getattr(model, "use_cg", None),
            "cg_steps": getattr(model, "cg_steps", None),
            "users": args.users,
            "items": args.items,
            "train_lines": n_lines,
            "train_pairs": int(user_items.nnz),
            "users_recommended": int(len(userids)),
            "recommend_seconds": recommend_seconds,
            "numpy_version": np.__version__,
            "scipy_version": scipy.__version__,
            "python_version": sys.version.split()[0],
        },
    }
    return result


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)  # argparse exits 2 on bad arguments
    # Keep stdout for the one JSON line: warnings (implicit's BLAS-thread warning, numpy deprecations, ...) and any
    # stray prints from libraries go to stderr.
    warnings.simplefilter("default")
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        result = run(args)
    except InputError as e:
        log(f"error: {e}")
        return 2
    except ImportError as e:
        log(f"error: cannot import a dependency ({e}); install scripts/bench/requirements-recs.txt")
        return 1
    except MemoryError:
        log("error: out of memory")
        return 1
    finally:
        sys.stdout = real_stdout
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
