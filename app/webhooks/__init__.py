"""Inbound webhooks: endpoints configured as data, their signatures and their effects."""
