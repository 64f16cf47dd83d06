#!/usr/bin/env python3
"""Fits the Python `lifetimes` BG/NBD and Gamma-Gamma models on customer summaries written by
`kizuna bench analytics`, times the fits and the predictions, and prints one JSON object.

Input CSVs have the columns frequency, recency, T, monetary_value (one row per customer).
Usage: lifetimes_compare.py --horizon 52 --runs 5 NAME=PATH [NAME=PATH ...]
(the number of timed runs per data set can be set per name with --runs-for NAME=N).
"""

import argparse
import json
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import lifetimes  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def timed(fn, runs):
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def bench(path, horizon, runs):
    d = pd.read_csv(path, float_precision="round_trip")
    f, r, t, m = d["frequency"], d["recency"], d["T"], d["monetary_value"]

    def fit_bg():
        return lifetimes.BetaGeoFitter(penalizer_coef=0.0).fit(f, r, t)

    bg_time, bg_times, bg = timed(fit_bg, runs)
    repeat = d[(d["frequency"] > 0) & (d["monetary_value"] > 0)]

    def fit_gg():
        return lifetimes.GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])

    gg_time, gg_times, gg = timed(fit_gg, runs)

    def predict():
        e = bg.conditional_expected_number_of_purchases_up_to_time(horizon, f, r, t)
        p = bg.conditional_probability_alive(f, r, t)
        return np.asarray(e), np.asarray(p)

    pred_time, pred_times, (e, p) = timed(predict, runs)
    return {
        "customers": int(len(d)),
        "repeat_buyers": int(len(repeat)),
        "bgnbd": {k: float(v) for k, v in bg.params_.items()},
        "bgnbd_fit_seconds": pred_round(bg_time),
        "bgnbd_fit_runs": [pred_round(x) for x in bg_times],
        "gamma_gamma": {k: float(v) for k, v in gg.params_.items()},
        "gamma_gamma_fit_seconds": pred_round(gg_time),
        "predict_seconds": pred_round(pred_time),
        "predict_runs": [pred_round(x) for x in pred_times],
        "sum_expected_purchases": float(np.nansum(e)),
        "sum_p_alive": float(np.nansum(p)),
        "nan_predictions": int(np.isnan(e).sum() + np.isnan(p).sum()),
    }


def pred_round(x):
    return round(x, 6)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--horizon", type=float, default=52.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--runs-for", action="append", default=[], help="NAME=N: timed runs for one data set")
    ap.add_argument("datasets", nargs="+", help="NAME=PATH of a summaries CSV")
    args = ap.parse_args()
    runs_for = dict(x.split("=", 1) for x in args.runs_for)
    out = {
        "versions": {
            "python": sys.version.split()[0],
            "lifetimes": lifetimes.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": __import__("scipy").__version__,
        }
    }
    for item in args.datasets:
        name, path = item.split("=", 1)
        out[name] = bench(path, args.horizon, int(runs_for.get(name, args.runs)))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
