"""Evaluations: datasets of cases, scorers, and batch runs of an app over a dataset.

- ``datasets``: datasets and their cases (each change raises the dataset's
  ``revision``), imported and exported as JSONL or CSV (``casefiles``);
- ``scorers``: what a case's output is scored with, each giving a score in
  [0, 1], passed or not, and a reason;
- ``queue``: the workers that run an evaluation's cases through the run service,
  one claimed case at a time, on the one lease queue (``appforge.core.queue``);
- ``evaluations``: starting, reading, cancelling and comparing evaluations.
"""
