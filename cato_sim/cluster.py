"""Machines with accelerators: where replicas are placed and what is free."""

from __future__ import annotations


class Cluster:
    def __init__(self, machines: int, accelerators_per_machine: int):
        self.free = [accelerators_per_machine] * machines

    def place(self, accelerators: int) -> int | None:
        """Take accelerators on the first machine that has them; its index, or None."""
        for i, f in enumerate(self.free):
            if f >= accelerators:
                self.free[i] -= accelerators
                return i
        return None

    def give_back(self, machine: int, accelerators: int) -> None:
        self.free[machine] += accelerators

    def room(self, accelerators: int) -> int:
        """How many more replicas of that size fit."""
        return sum(f // accelerators for f in self.free)
