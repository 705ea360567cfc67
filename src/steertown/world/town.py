"""The town map: named locations with descriptions, neighbours and capacity."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    name: str
    description: str
    neighbours: tuple[str, ...]
    capacity: int
    work: str  # what WORK means here


# A small connected map; homes are generated per population (home_0..home_{n-1}).
PUBLIC_LOCATIONS: tuple[Location, ...] = (
    Location("town_square", "the open square at the heart of town, with a fountain",
             ("community_center", "cafe", "library", "park", "market"), 40,
             "help set up the weekly notice board"),
    Location("community_center", "a hall where town meetings and workshops happen",
             ("town_square", "library"), 30, "prepare the collaborative town brief"),
    Location("library", "a quiet library with reading tables",
             ("town_square", "community_center", "park"), 20, "catalogue new books"),
    Location("cafe", "a small busy cafe with a long counter",
             ("town_square", "market"), 12, "serve coffee and bake bread"),
    Location("park", "a green park with benches and a pond",
             ("town_square", "library"), 40, "tend the community garden"),
    Location("market", "an open-air market with stalls",
             ("town_square", "cafe"), 25, "sort produce at a stall"),
)

HOME_LINKS = ("town_square", "park", "market")


class Town:
    """Locations by name, including one home per household."""

    def __init__(self, num_homes: int):
        self.locations: dict[str, Location] = {loc.name: loc for loc in PUBLIC_LOCATIONS}
        extra: dict[str, list[str]] = {name: [] for name in HOME_LINKS}
        for i in range(num_homes):
            name = f"home_{i}"
            link = HOME_LINKS[i % len(HOME_LINKS)]
            self.locations[name] = Location(name, "a cosy private home", (link,), 4,
                                            "tidy up and fix things at home")
            extra[link].append(name)
        for name, homes in extra.items():
            loc = self.locations[name]
            self.locations[name] = Location(loc.name, loc.description,
                                            loc.neighbours + tuple(homes), loc.capacity, loc.work)

    def __contains__(self, name: str) -> bool:
        return name in self.locations

    def neighbours(self, name: str) -> tuple[str, ...]:
        return self.locations[name].neighbours

    def public_neighbours(self, name: str) -> list[str]:
        """Neighbours without other people's homes (what prompts list)."""
        return [n for n in self.neighbours(name) if not n.startswith("home_")]
