"""The data card: sources, versions, licences, counts, padding, bad records.

Written as `data_card.json` (for tools) and `DATA_CARD.md` (for people).
HPO's licence asks users to credit the HPO Consortium and to show the HPO
version: both appear in every card whose graph uses HPO.
"""

from __future__ import annotations

import dataclasses
import json
import os

import bali_jax


def make_card(*, kg, counts, docs_seen, pack, bad, link, options, extra,
              seconds) -> dict:
  mentioned = extra.pop("mentioned_concepts", None)
  return {
      "bali_jax_version": bali_jax.__version__,
      "sources": [dataclasses.asdict(s) for s in kg.sources],
      "graph": kg.stats(),
      "corpus": {"documents_read": docs_seen, "splits": counts,
                 **({"distinct_linked_concepts": mentioned}
                    if mentioned is not None else {})},
      "linker": link,
      "packing": pack,
      "bad_records": bad.to_dict(),
      "options": {**dataclasses.asdict(options),
                  "budgets": options.budgets.to_dict()},
      "build_seconds": round(seconds, 1),
      **extra,
  }


def _table(rows) -> list[str]:
  return ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def to_markdown(c: dict) -> str:
  g, corpus = c["graph"], c["corpus"]
  lines = ["# Data card: BALI records", "",
           f"Built by bali_jax {c['bali_jax_version']} in "
           f"{c['build_seconds']} s.", "", "## Sources", "",
           "| source | version | licence | file |", "|---|---|---|---|"]
  lines += _table((s["name"], s["version"], s["licence"],
                   os.path.basename(s["path"])) for s in c["sources"])
  credits = [s["credit"] for s in c["sources"] if s.get("credit")]
  if credits:
    lines += [""] + [f"> {x}" for x in credits]
  lines += ["", "## Graph", "",
            f"{g['concepts']:,} concepts ({g['linkable_concepts']:,} usable "
            f"by the linker), {g['names']:,} names, {g['edges']:,} directed "
            "edges.", "", "| relation | edges |", "|---|---|"]
  lines += _table(g["edges_by_relation"].items())
  lines += ["", "## Corpus", "", f"{corpus['documents_read']:,} documents "
            "read. Entities are the unique concepts of each sentence.", "",
            "| split | documents | sentences | entities | token links | "
            "distinct concepts |", "|---|---|---|---|---|---|"]
  lines += _table((k, v["documents"], v["sentences"], v["entities"],
                   v["token_links"], v["distinct_concepts"])
                  for k, v in corpus["splits"].items())
  if c.get("linker"):
    ln = c["linker"]
    lines += ["", "## Dictionary linker", "",
              f"{ln['texts']:,} sentences, {ln['fraction_linked']:.1%} with "
              f"at least one mention, {ln['mentions_per_text']:.2f} mentions "
              f"per sentence, {ln['distinct_concepts']:,} distinct concepts.",
              "", "Most linked (spot-check these):", "",
              "| concept | name | mentions |", "|---|---|---|"]
    lines += _table((m["concept"], m["name"], m["mentions"])
                    for m in ln["most_linked"])
    if ln.get("precision_rules"):
      lines += ["", "Names kept from linking by the precision rules "
                "(data_prep/linking/linker.py):", "",
                "| rule | names | examples |", "|---|---|---|"]
      lines += _table((r, v["names"], ", ".join(v["examples"]))
                      for r, v in ln["precision_rules"].items())
  b, sizing = c["options"]["budgets"], c.get("name_rows_sizing")
  lines += ["", "## Packed rows and padding", "",
            f"Per row: {b['seq_len']} sentence tokens, {b['name_rows']} x "
            f"{b['name_len']} concept-name tokens"
            + (f" (name rows sized from the data: "
               f"{sizing['name_tokens_per_sentence_token']:.2f} name tokens "
               f"per sentence token over {sizing['sampled_sentences']} "
               "sentences)" if sizing else "")
            + (f", {b['lin_rows']} x {b['lin_len']} linearised-subgraph "
               f"tokens (format {c['options'].get('linear_format', 'v1')})"
               if b.get("lin_rows") else ", no linearised subgraphs")
            + f"; packed first-fit over {c['options'].get('open_rows', 1)} "
            "open rows.", "",
            "Rows with two sentences of one document: as packed, and if "
            "sentences were dealt to rows at random (what chance says).", "",
            "| split | rows | sentences | same-document rows | if random | "
            "pad tokens | pad name tokens | pad linear tokens | "
            "unused entity slots | unused node slots | unused edge slots |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  lines += _table((k, p["rows"], p["sentences"],
                   f"{p['rows_with_two_sentences_of_one_document']:.1%}",
                   f"{p['same_document_rows_if_random']:.1%}",
                   f"{p['pad_fraction_sentence_tokens']:.1%}",
                   f"{p['pad_fraction_name_tokens']:.1%}",
                   (f"{p['pad_fraction_linear_tokens']:.1%}"
                    if "pad_fraction_linear_tokens" in p else "-"),
                   f"{p['unused_entity_slots']:.1%}",
                   f"{p['unused_node_slots']:.1%}",
                   f"{p['unused_edge_slots']:.1%}")
                  for k, p in c["packing"].items())
  lines += ["", "## Bad records", ""]
  if c["bad_records"]:
    lines += ["| reason | count | first seen |", "|---|---|---|"]
    lines += _table((k, v["count"], v["first"])
                    for k, v in c["bad_records"].items())
  else:
    lines += ["None."]
  lines += ["", "## Options", "", "```json",
            json.dumps(c["options"], indent=2), "```", ""]
  return "\n".join(lines)


def write_card(out_dir: str, c: dict) -> None:
  with open(os.path.join(out_dir, "data_card.json"), "w") as f:
    json.dump(c, f, indent=2)
  with open(os.path.join(out_dir, "DATA_CARD.md"), "w") as f:
    f.write(to_markdown(c))
