"""Cron schedules: agents that start on a clock, one execution per fire."""
