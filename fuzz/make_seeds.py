#!/usr/bin/env python3
"""Writes the curated seed corpus, fuzz/corpus/<target>/<name>: valid inputs and edge cases, one per file.

Run from anywhere: `python3 fuzz/make_seeds.py`. It rewrites the files it owns and leaves others
(crash reproducers added by hand, see docs/security.md) alone. The fuzzer's own finds are not committed:
`cargo xtask fuzz` writes them to a temporary directory.
"""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"

PROFILE = {
    "full_name": "Érica Conceição Teixeira",
    "gender": "F",
    "birth_date": "1991-05-04",
    "department": "DevOps",
    "email": "erica.teixeira@fake-devops-db.internal",
    "username": "erica.teixeira",
}


def text(s):
    return s.encode("utf-8")


def obj(pairs):
    """A JSON object from (key, raw JSON value) pairs, keeping repeats and order."""
    return text("{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}")


def quoted(fields):
    return [(k, '"' + v + '"') for k, v in fields.items()]


def path_and_query():
    ids = ["1", "42", "2147483647", "2147483648", "0", "007", "-1", "+1", "1e3", " 1", "１２３", "9" * 11]
    lists = ["id", "email", "email,department", "id,email,email", ",".join(PROFILE), "EMAIL",
             "email,,gender", "email,", "password"]
    queries = ["fields=gender%2Cemail", "fields=id", "fields=email&fields=gender", "field=email",
               "fields=", "fields", "fields=email&", "fields=%2c", "fields=%FF", "a=1&fields=email"]
    seeds = {f"id-{i}": text(v) for i, v in enumerate(ids)}
    seeds.update({f"fields-{i}": text(v) for i, v in enumerate(lists)})
    seeds.update({f"query-{i}": text(v) for i, v in enumerate(queries)})
    seeds["fields-too-long"] = text(",".join(["email"] * 43))
    return seeds


def headers():
    values = ['"7"', '"0"', 'W/"7"', '"07"', '"-7"', '"9223372036854775807"', '"9223372036854775808"', "*",
              "max-age=30, stale-if-error=60", 'private, Max-Age="5" ,must-revalidate',
              "max-age=99999999999999999999999", "max-age=5, no-store", "no-cache", "max-age=5, max-age=6",
              "stale-if-error=1, max-age=2", 'max-age=""', "max-age=1.5", "max-age", "s-maxage=5, max-age=0"]
    return {f"value-{i}": text(v) for i, v in enumerate(values)}


def json_body():
    full = quoted(PROFILE)
    seeds = {
        "full": obj(full),
        "full-pretty": text('{\n  "full_name": "Ana Silva",\n  "gender": "M",\n  "birth_date": "2000-02-29",\n'
                            '  "department": "Human Resources",\n  "email": "a+tag@example.org",\n'
                            '  "username": "ana_silva-2"\n}\n'),
        "patch-empty": b"{}",
        "patch-one": obj([("department", '"Security"')]),
        "patch-escaped-key": text('{"\\u0065mail":"x@a.b"}'),
        "patch-null": obj([("email", "null")]),
        "patch-number": obj([("gender", "1")]),
        "patch-nested": obj([("full_name", '{"a":[1,2,{"b":null}]}')]),
        "patch-control-char": text('{"full_name":"Ana\\u0000"}'),
        "unknown-field": obj(full + [("admin", "true")]),
        "id-field": obj([("id", "3")]),
        "repeated-field": obj([("email", '"a@b.c"'), ("email", '"d@e.f"')]),
        "missing-field": obj(full[:1] + full[2:]),
        "future-birth-date": obj([(k, '"2026-03-11"' if k == "birth_date" else v) for k, v in full]),
        "bad-everything": obj([("full_name", '" "'), ("gender", '"X"'), ("birth_date", '"1899-12-31"'),
                               ("department", '""'), ("email", '"a@b"'), ("username", '"Bad Name"')]),
        "array": b'[{"email":"a@b.c"}]',
        "trailing": obj(full) + b" trailing",
        "not-json": b"not json",
        "empty": b"",
        "string": b'"x"',
        "profile-answer": obj([("id", "7")] + full),
        "profile-answer-id-last": obj(full + [("id", "2147483647")]),
        "profile-answer-future": obj([("id", "7")] + [(k, '"2026-03-11"' if k == "birth_date" else v)
                                                      for k, v in full]),
    }
    return seeds


def cache_hash():
    def hash_bytes(mask, pairs):
        return bytes([mask]) + b"\0".join(text(k) + b"\0" + (v if isinstance(v, bytes) else text(v))
                                          for k, v in pairs)

    meta = [("_version", "3"), ("_filled_at", "1700000000000")]
    fresh = [("_fresh_until", "1700000030000"), ("_delta_ms", "4")]
    profile = list(PROFILE.items())
    seeds = {
        "present": hash_bytes(0x3F, profile + meta + fresh),
        "present-fields": hash_bytes(0x12, profile + meta + fresh),
        "present-id-only": hash_bytes(0x00, profile + meta + fresh),
        "present-older-writer": hash_bytes(0x3F, profile + meta),
        "present-unknown-field": hash_bytes(0x3F, profile + meta + fresh + [("_future", "x")]),
        "present-leading-zeros": hash_bytes(0x3F, profile + [("_version", "007"), ("_filled_at", "0")]),
        "half-freshness": hash_bytes(0x3F, profile + meta + fresh[:1]),
        "delta-overflow": hash_bytes(0x3F, profile + meta + [fresh[0], ("_delta_ms", "4294967296")]),
        "missing-marker": hash_bytes(0x3F, [("_state", "missing"), ("_version", "0"), ("_filled_at", "5")]),
        "tombstone": hash_bytes(0x01, [("_state", "deleted"), ("_version", "7"), ("_filled_at", "6")]),
        "tombstone-with-fields": hash_bytes(0x3F, [("_state", "deleted")] + profile + meta),
        "bad-state": hash_bytes(0x3F, [("_state", "gone"), ("_version", "1"), ("_filled_at", "1")]),
        "state-without-version": hash_bytes(0x00, [("_state", "missing")]),
        "not-utf8": hash_bytes(0x3F, [(k, b"\xff\xfea" if k == "full_name" else v) for k, v in profile] + meta),
        "negative-version": hash_bytes(0x3F, profile + [("_version", "-1"), ("_filled_at", "1")]),
        "huge-version": hash_bytes(0x3F, profile + [("_version", "9223372036854775808"), ("_filled_at", "1")]),
        "only-version": hash_bytes(0x3F, [("_version", "1")]),
        "empty": b"\x3f",
    }
    return seeds


def main():
    for target, seeds in [("path_and_query", path_and_query()), ("headers", headers()),
                          ("json_body", json_body()), ("cache_hash", cache_hash())]:
        folder = ROOT / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
