"""Geo commands: a geo set is a sorted set whose scores are 52-bit geohashes.

GEOADD (older masters; Redis rewrites it to ZADD), and GEOSEARCHSTORE / GEORADIUS[BYMEMBER]
... STORE|STOREDIST, which masters propagate verbatim: the search is replayed the way
Redis runs it (the same 9 geohash boxes, scanned in the same order, the same distance
formulas), because with COUNT ... ANY the result depends on that order. No library
reproduces Redis's geohash search, hence this module.
"""

import bisect
import math
from dataclasses import dataclass

from greenredis.replication.applier.base import ApplyError, Core, parse_float, parse_int
from greenredis.replication.keyspace import ZSet

LAT_MAX = 85.05112878
LAT_MIN = -85.05112878
LON_MAX = 180.0
LON_MIN = -180.0
STEP_MAX = 26
EARTH_RADIUS = 6372797.560856
MERCATOR_MAX = 20037726.37
D_R = math.pi / 180.0
UNITS = {b"M": 1.0, b"KM": 1000.0, b"FT": 0.3048, b"MI": 1609.34}
_M64 = (1 << 64) - 1


def _interleave(x, y):
    """Bits of ``x`` at even positions, bits of ``y`` at odd ones (both 32-bit)."""

    def spread(v):
        v &= 0xFFFFFFFF
        v = (v | (v << 16)) & 0x0000FFFF0000FFFF
        v = (v | (v << 8)) & 0x00FF00FF00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
        v = (v | (v << 2)) & 0x3333333333333333
        return (v | (v << 1)) & 0x5555555555555555

    return spread(x) | (spread(y) << 1)


def _deinterleave(bits):
    """(even bits, odd bits) of a 64-bit int."""

    def squash(v):
        v &= 0x5555555555555555
        v = (v | (v >> 1)) & 0x3333333333333333
        v = (v | (v >> 2)) & 0x0F0F0F0F0F0F0F0F
        v = (v | (v >> 4)) & 0x00FF00FF00FF00FF
        v = (v | (v >> 8)) & 0x0000FFFF0000FFFF
        return (v | (v >> 16)) & 0x00000000FFFFFFFF

    return squash(bits), squash(bits >> 1)


def encode(lon, lat, step=STEP_MAX):
    """Geohash bits of a point at ``step`` bits per coordinate; None when out of range."""
    if not (LON_MIN <= lon <= LON_MAX and LAT_MIN <= lat <= LAT_MAX):
        return None
    lat_off = (lat - LAT_MIN) / (LAT_MAX - LAT_MIN) * (1 << step)
    lon_off = (lon - LON_MIN) / (LON_MAX - LON_MIN) * (1 << step)
    return _interleave(int(lat_off), int(lon_off))


def geohash(lon, lat):
    """The score GEOADD stores for a point (raises ApplyError when out of range)."""
    bits = encode(lon, lat)
    if bits is None:
        raise ApplyError(f"invalid longitude,latitude pair {lon:f},{lat:f}")
    return bits


def _area(bits, step):
    """(lon_min, lon_max, lat_min, lat_max) of a geohash box."""
    ilat, ilon = _deinterleave(bits)
    scale = float(1 << step)
    lat_scale, lon_scale = LAT_MAX - LAT_MIN, LON_MAX - LON_MIN
    return (
        LON_MIN + (ilon * 1.0 / scale) * lon_scale,
        LON_MIN + ((ilon + 1) * 1.0 / scale) * lon_scale,
        LAT_MIN + (ilat * 1.0 / scale) * lat_scale,
        LAT_MIN + ((ilat + 1) * 1.0 / scale) * lat_scale,
    )


def decode(score):
    """The (lon, lat) a geo set member's score stands for: the centre of its box."""
    lon_min, lon_max, lat_min, lat_max = _area(int(score) & _M64, STEP_MAX)
    lon = min(max((lon_min + lon_max) / 2, LON_MIN), LON_MAX)
    lat = min(max((lat_min + lat_max) / 2, LAT_MIN), LAT_MAX)
    return lon, lat


def _lat_distance(lat1, lat2):
    return EARTH_RADIUS * abs(lat2 * D_R - lat1 * D_R)


def distance(lon1, lat1, lon2, lat2):
    """Haversine distance in meters, computed in Redis's order of operations."""
    lon1r, lon2r = lon1 * D_R, lon2 * D_R
    v = math.sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return _lat_distance(lat1, lat2)
    lat1r, lat2r = lat1 * D_R, lat2 * D_R
    u = math.sin((lat2r - lat1r) / 2)
    a = u * u + math.cos(lat1r) * math.cos(lat2r) * v * v
    return 2.0 * EARTH_RADIUS * math.asin(math.sqrt(a))


def _move(bits, step, dx, dy):
    """A neighbouring box: ``dx`` east/west, ``dy`` north/south (wrapping like Redis)."""
    x = bits & 0xAAAAAAAAAAAAAAAA
    y = bits & 0x5555555555555555
    if dx:
        zz = 0x5555555555555555 >> (64 - step * 2)
        x = (x + zz + 1) if dx > 0 else ((x | zz) - (zz + 1))
        x &= 0xAAAAAAAAAAAAAAAA >> (64 - step * 2)
    if dy:
        zz = 0xAAAAAAAAAAAAAAAA >> (64 - step * 2)
        y = (y + zz + 1) if dy > 0 else ((y | zz) - (zz + 1))
        y &= 0x5555555555555555 >> (64 - step * 2)
    return (x | y) & _M64


class Shape:
    __slots__ = ("lon", "lat", "radius", "width", "height", "conversion")

    def __init__(self, lon, lat, conversion, radius=None, width=None, height=None):
        self.lon, self.lat, self.conversion = lon, lat, conversion
        self.radius, self.width, self.height = radius, width, height

    def bounds(self):
        if self.radius is not None:
            height = width = self.conversion * self.radius
        else:
            height = self.conversion * (self.height / 2)
            width = self.conversion * (self.width / 2)
        lat_delta = (height / EARTH_RADIUS) / D_R
        top = (width / EARTH_RADIUS / math.cos((self.lat + lat_delta) * D_R)) / D_R
        bottom = (width / EARTH_RADIUS / math.cos((self.lat - lat_delta) * D_R)) / D_R
        delta = bottom if self.lat < 0 else top
        return self.lon - delta, self.lat - lat_delta, self.lon + delta, self.lat + lat_delta

    def radius_meters(self):
        if self.radius is not None:
            return self.radius * self.conversion
        w, h = self.width / 2, self.height / 2
        return math.sqrt(w * w + h * h) * self.conversion

    def contains(self, lon, lat):
        """Distance in meters if the point is inside, else None."""
        if self.radius is not None:
            d = distance(self.lon, self.lat, lon, lat)
            return d if d <= self.radius * self.conversion else None
        if _lat_distance(lat, self.lat) > self.height * self.conversion / 2:
            return None
        if distance(lon, lat, self.lon, lat) > self.width * self.conversion / 2:
            return None
        return distance(self.lon, self.lat, lon, lat)


def _estimate_step(meters, lat):
    if meters == 0:
        return STEP_MAX
    step = 1
    while meters < MERCATOR_MAX:
        meters *= 2
        step += 1
    step -= 2
    if lat > 66 or lat < -66:
        step -= 1
        if lat > 80 or lat < -80:
            step -= 1
    return min(max(step, 1), STEP_MAX)


def search_boxes(shape):
    """The geohash boxes Redis scans, in its order: [(bits, step) or None, ...]."""
    min_lon, min_lat, max_lon, max_lat = shape.bounds()
    step = _estimate_step(shape.radius_meters(), shape.lat)

    def boxes(step):
        bits = encode(shape.lon, shape.lat, step)
        return bits, {
            name: _move(bits, step, dx, dy)
            for name, dx, dy in (
                ("n", 0, 1),
                ("s", 0, -1),
                ("e", 1, 0),
                ("w", -1, 0),
                ("ne", 1, 1),
                ("nw", -1, 1),
                ("se", 1, -1),
                ("sw", -1, -1),
            )
        }

    bits, nb = boxes(step)
    north, south = _area(nb["n"], step), _area(nb["s"], step)
    east, west = _area(nb["e"], step), _area(nb["w"], step)
    if step > 1 and (north[3] < max_lat or south[2] > min_lat or east[1] < max_lon or west[0] > min_lon):
        step -= 1
        bits, nb = boxes(step)
    area = _area(bits, step)
    if step >= 2:
        if area[2] < min_lat:
            nb["s"] = nb["sw"] = nb["se"] = None
        if area[3] > max_lat:
            nb["n"] = nb["ne"] = nb["nw"] = None
        if area[0] < min_lon:
            nb["w"] = nb["sw"] = nb["nw"] = None
        if area[1] > max_lon:
            nb["e"] = nb["se"] = nb["ne"] = None
    order = [bits] + [nb[k] for k in ("n", "s", "e", "w", "ne", "nw", "se", "sw")]
    return [(b, step) if b is not None else None for b in order]


class GeoMixin(Core):
    def cmd_geoadd(self, argv):
        key = argv[1]
        nx = xx = False
        i = 2
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt != b"CH":
                break
            i += 1
        rest = argv[i:]
        if not rest or len(rest) % 3 or (nx and xx):
            raise ApplyError("GEOADD: syntax error")
        pairs = []
        for j in range(0, len(rest), 3):
            lon = parse_float(rest[j], "longitude")
            lat = parse_float(rest[j + 1], "latitude")
            pairs.append((float(geohash(lon, lat)), rest[j + 2]))
        return [(self._db, key)] if self._zadd(key, pairs, nx, xx) else []

    def _lonlat(self, args):
        lon, lat = parse_float(args[0], "longitude"), parse_float(args[1], "latitude")
        if not (LON_MIN <= lon <= LON_MAX and LAT_MIN <= lat <= LAT_MAX):
            raise ApplyError(f"invalid longitude,latitude pair {lon:f},{lat:f}")
        return lon, lat

    def _member_lonlat(self, z, member):
        score = z.get(member) if z is not None else None
        if score is None:
            raise ApplyError("could not decode requested zset member")
        if not 0 <= score < 18446744073709551616.0:
            # Redis casts the score to uint64: undefined for this value, so not replayable.
            raise ApplyError(f"member {member!r} has a score that is not a geohash: {score!r}")
        return decode(score)

    def _geo_search(self, argv, kind):
        """GEORADIUS / GEORADIUSBYMEMBER / GEOSEARCHSTORE; only the STORE forms write."""
        src = argv[2] if kind == "search" else argv[1]
        z = self._zset(src)
        q = self._geo_query(argv, kind, z)
        if q.store is None:
            return []  # a read
        if z is None:
            return [(self._db, q.store)] if self._delete(q.store) else []
        sort = q.sort
        if q.count and sort is None and not q.any:
            sort = b"ASC"
        shape = Shape(q.lon, q.lat, q.conversion, q.radius, q.width, q.height)
        found = _scan(z, shape, q.count if q.any else 0)
        if sort is not None:
            found.sort(key=lambda f: f[0], reverse=sort == b"DESC")
        if q.count:
            found = found[: q.count]
        result = ZSet((member, d / q.conversion if q.storedist else score) for d, score, member in found)
        if result:
            self._put(q.store, result)
            return [(self._db, q.store)]
        return [(self._db, q.store)] if self._delete(q.store) else []

    def _geo_query(self, argv, kind, z):
        """The options of a GEORADIUS*/GEOSEARCHSTORE command, checked like Redis does."""
        q = _GeoQuery(store=argv[1] if kind == "search" else None)
        if kind == "radius":
            q.lon, q.lat = self._lonlat(argv[2:4])
            q.radius, q.conversion = _distance_args(argv[4:6])
            i = 6
        elif kind == "member":
            q.radius, q.conversion = _distance_args(argv[3:5])
            if z is not None:
                q.lon, q.lat = self._member_lonlat(z, argv[2])
            i = 5
        else:
            i = 3
        from_member = from_lonlat = False
        n = len(argv)
        while i < n:
            opt = argv[i].upper()
            left = n - i - 1
            if opt in (b"WITHDIST", b"WITHHASH", b"WITHCOORD"):
                if q.store is not None or kind == "search":
                    raise ApplyError(f"{opt.decode()} is not compatible with STORE")
            elif opt == b"ANY":
                q.any = True
            elif opt in (b"ASC", b"DESC"):
                q.sort = opt
            elif opt == b"COUNT" and left >= 1:
                q.count = parse_int(argv[i + 1], "COUNT")
                if q.count <= 0:
                    raise ApplyError("COUNT must be > 0")
                i += 1
            elif opt in (b"STORE", b"STOREDIST") and left >= 1 and kind != "search":
                q.store, q.storedist = argv[i + 1], opt == b"STOREDIST"
                i += 1
            elif opt == b"STOREDIST" and kind == "search":
                q.storedist = True
            elif opt == b"FROMMEMBER" and left >= 1 and kind == "search" and not from_lonlat:
                if z is not None:
                    q.lon, q.lat = self._member_lonlat(z, argv[i + 1])
                from_member = True
                i += 1
            elif opt == b"FROMLONLAT" and left >= 2 and kind == "search" and not from_member:
                q.lon, q.lat = self._lonlat(argv[i + 1 : i + 3])
                from_lonlat = True
                i += 2
            elif opt == b"BYRADIUS" and left >= 2 and kind == "search" and q.width is None:
                q.radius, q.conversion = _distance_args(argv[i + 1 : i + 3])
                i += 2
            elif opt == b"BYBOX" and left >= 3 and kind == "search" and q.radius is None:
                q.width = parse_float(argv[i + 1], "width")
                q.height = parse_float(argv[i + 2], "height")
                if q.width < 0 or q.height < 0:
                    raise ApplyError("height or width cannot be negative")
                q.conversion = _unit(argv[i + 3])
                i += 3
            else:
                raise ApplyError(f"{argv[0].upper().decode()}: syntax error at {argv[i]!r}")
            i += 1
        if kind == "search" and (not (from_member or from_lonlat) or q.conversion is None):
            raise ApplyError("GEOSEARCHSTORE needs FROMMEMBER|FROMLONLAT and BYRADIUS|BYBOX")
        if q.any and not q.count:
            raise ApplyError("the ANY argument requires COUNT argument")
        return q

    def cmd_georadius(self, argv):
        return self._geo_search(argv, "radius")

    def cmd_georadiusbymember(self, argv):
        return self._geo_search(argv, "member")

    def cmd_geosearchstore(self, argv):
        return self._geo_search(argv, "search")


@dataclass(slots=True)
class _GeoQuery:
    """What a GEORADIUS*/GEOSEARCHSTORE asks for (``store`` None: a read)."""

    store: bytes | None = None
    storedist: bool = False
    lon: float | None = None
    lat: float | None = None
    conversion: float | None = None
    radius: float | None = None
    width: float | None = None
    height: float | None = None
    count: int = 0
    any: bool = False
    sort: bytes | None = None


def _scan(z, shape, limit):
    """``[(distance, score, member)]`` of ``z`` inside ``shape``, scanning Redis's boxes in
    its order (so ANY with COUNT ``limit`` stops where Redis stops)."""
    found = []
    ordered = z.ordered()
    scores = [score for _, score in ordered]
    last = 0  # index of the last box scanned; Redis never compares with box 0
    boxes = search_boxes(shape)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        if last and box == boxes[last]:
            continue  # the same box as the one just scanned
        if limit and len(found) >= limit:
            break
        bits, step = box
        hi = (bits + 1) << (52 - step * 2)
        j = bisect.bisect_left(scores, bits << (52 - step * 2))
        while j < len(scores) and scores[j] < hi:
            member, score = ordered[j]
            d = shape.contains(*decode(score))
            if d is not None:
                found.append((d, score, member))
                if limit and len(found) >= limit:
                    break
            j += 1
        last = index
    return found


def _unit(arg):
    conversion = UNITS.get(arg.upper())
    if conversion is None:
        raise ApplyError("unsupported unit provided. please use M, KM, FT, MI")
    return conversion


def _distance_args(args):
    if len(args) != 2:
        raise ApplyError("syntax error")
    radius = parse_float(args[0], "radius")
    if radius < 0:
        raise ApplyError("radius cannot be negative")
    return radius, _unit(args[1])
