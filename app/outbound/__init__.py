"""Webhooks out: signed notifications of an execution's status changes to subscribers' URLs."""
