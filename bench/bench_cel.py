"""Choice of the CEL library (issue 9): ``python bench/bench_cel.py [--hostile-timeout S]``.

Runs the same Kubernetes-style expressions through each candidate on PyPI, each in its own
process (so that one that hangs on the hostile expression cannot stall the others):

- ``celpy``: cel-python, pure Python (lark parser, tree-walking evaluator);
- ``rust``: common-expression-language, bindings of the Rust ``cel-interpreter``;
- ``cpp``: cel-expr-python, Google's binding of cel-cpp, bare (its strings and optional
  extensions loaded);
- ``kubeling``: cel-cpp through ``kubeling.cel`` (the chosen library plus Kubernetes' extension
  functions written for it).

For each it prints how many of the expressions give the right answer (compile errors and
evaluation errors count as wrong), the time to compile one macro expression, the time to
evaluate ``self.spec.replicas <= 5`` on a small object, and what happens with a hostile
expression of 10^5 nested macro iterations (the runtime bound a server needs). Candidates not
installed are reported as such; ``pip install cel-python common-expression-language
cel-expr-python`` installs all three.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OBJ = {"spec": {"replicas": 6, "name": "Foo", "tags": ["a", "b", "c"], "items": [1, 2, 3]},
       "metadata": {"name": "w", "labels": {"env": "prod"}}}
OLD = {"spec": {"replicas": 3, "name": "Foo", "tags": ["a"], "items": [1]}, "metadata": {"name": "w"}}

# (expression, expected result); the first group is core CEL, the rest Kubernetes' libraries.
CASES = [
    ("self.spec.replicas <= 5", False),
    ("has(self.spec.name)", True),
    ("has(self.spec.missing)", False),
    ("self.spec.tags.all(t, t.size() == 1)", True),
    ("self.spec.tags.exists(t, t == 'b')", True),
    ("self.spec.items.map(x, x * 2) == [2, 4, 6]", True),
    ("self.spec.name == oldSelf.spec.name", True),
    ("'env' in self.metadata.labels", True),
    ("self.spec.items.size() > 2 ? 'big' : 'small'", "big"),
    ("self.metadata.labels.?env.orValue('x') == 'prod'", True),
    # strings ext
    ("self.spec.name.lowerAscii() == 'foo'", True),
    ("self.spec.name.split('o').size() == 3", True),
    ("['a', 'b'].join('-') == 'a-b'", True),
    ("self.spec.name.indexOf('o') == 1", True),
    ("self.spec.name.replace('o', '0') == 'F00'", True),
    ("self.spec.name.substring(1) == 'oo'", True),
    ("'%s-%d'.format(['a', 1]) == 'a-1'", True),
    # lists, regex, quantity, url, ip
    ("self.spec.items.isSorted()", True),
    ("self.spec.items.sum() == 6", True),
    ("self.spec.items.indexOf(2) == 1", True),
    ("self.spec.name.find('o+') == 'oo'", True),
    ("quantity('1Gi').isGreaterThan(quantity('1M'))", True),
    ("isURL('https://example.com')", True),
    ("cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))", True),
]
HOSTILE = ("[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10]"
           ".all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))")


def adapter(which: str):
    """(label, compile(expr) -> program, evaluate(program) -> Python value)."""
    if which == "celpy":
        import celpy
        env = celpy.Environment()
        act = {"self": celpy.json_to_cel(OBJ), "oldSelf": celpy.json_to_cel(OLD)}

        def ev(p):
            r = p.evaluate(act)
            if isinstance(r, Exception):
                raise r
            return json.loads(json.dumps(r, cls=celpy.CELJSONEncoder))
        return "cel-python (celpy, pure Python)", lambda e: env.program(env.compile(e)), ev
    if which == "rust":
        import cel
        return ("common-expression-language (Rust cel-interpreter)", cel.compile,
                lambda p: p.execute({"self": OBJ, "oldSelf": OLD}))
    if which == "cpp":
        from cel_expr_python import cel
        from cel_expr_python.ext import ext_optional, ext_strings
        env = cel.NewEnv(variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
                         extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional()])

        def ev(p):
            v = p.eval(data={"self": OBJ, "oldSelf": OLD})
            if v.type().name() == "ERROR":
                raise RuntimeError(v.value())
            return v.plain_value()
        return "cel-expr-python (cel-cpp), bare", env.compile, ev
    sys.path.insert(0, str(ROOT))
    import kubeling.cel as kc
    return ("kubeling.cel (cel-cpp + Kubernetes libraries)",
            lambda e: kc.compile(e, {"self": None, "oldSelf": None}),
            lambda p: p.evaluate({"self": OBJ, "oldSelf": OLD}))


def child(which: str, part: str) -> None:
    try:
        label, comp, ev = adapter(which)
    except ImportError as e:
        print(json.dumps({"error": f"not installed ({e})"}))
        return
    if part == "hostile":
        t0 = time.perf_counter()
        try:
            ev(comp(HOSTILE))
            out = "evaluated"
        except Exception as e:
            out = "refused: " + str(e).splitlines()[0][:80]
        print(json.dumps({"hostile": out, "seconds": time.perf_counter() - t0}))
        return
    ok, fails, progs = 0, [], []
    for e, _ in CASES:
        try:
            progs.append(comp(e))
        except Exception as ex:
            progs.append(ex)
    for (e, want), p in zip(CASES, progs):
        if isinstance(p, Exception):
            fails.append(f"{e}: compile error")
            continue
        try:
            got = ev(p)
        except Exception:
            fails.append(f"{e}: evaluation error")
            continue
        if got == want:
            ok += 1
        else:
            fails.append(f"{e}: got {got!r}")
    p = progs[0]
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        ev(p)
    t_eval = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(200):
        comp(CASES[3][0])
    t_comp = (time.perf_counter() - t0) / 200
    print(json.dumps({"label": label, "ok": ok, "total": len(CASES), "fails": fails,
                      "compile_us": t_comp * 1e6, "eval_us": t_eval * 1e6}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--hostile-timeout", type=float, default=120)
    ap.add_argument("--candidates", default="celpy,rust,cpp,kubeling")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    print("| candidate | correct | compile (µs) | eval (µs) | hostile 10^5 iterations |")
    print("|---|---:|---:|---:|---|")
    notes = []
    for which in args.candidates.split(","):
        r = subprocess.run([sys.executable, __file__, "--child", which, "cases"],
                           capture_output=True, text=True, timeout=600)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if "error" in res:
            print(f"| {which} | {res['error']} | | | |")
            continue
        try:
            h = subprocess.run([sys.executable, __file__, "--child", which, "hostile"],
                               capture_output=True, text=True, timeout=args.hostile_timeout)
            hr = json.loads(h.stdout.strip().splitlines()[-1])
            hostile = f"{hr['hostile']} after {hr['seconds']:.2f} s"
        except subprocess.TimeoutExpired:
            hostile = f"still running after {args.hostile_timeout:.0f} s (killed)"
        print(f"| {res['label']} | {res['ok']}/{res['total']} | {res['compile_us']:.0f} | "
              f"{res['eval_us']:.1f} | {hostile} |")
        notes += [f"{which}: {f}" for f in res["fails"]]
    if notes:
        print("\nWrong or unsupported:")
        for n in notes:
            print("-", n)


if __name__ == "__main__":
    main()
