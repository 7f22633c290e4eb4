/** Job ids (protocol/ids.ts): time-ordered, 80 random bits each, safe in subjects and URLs. */
import t from "tap";
import { newId } from "../../protocol/index.js";

t.test(
  "ids - 5,000 ids (across several refills of the random pool) are distinct, 26 Crockford base32 characters, and every random position takes every symbol",
  (t) => {
    const ids = Array.from({ length: 5_000 }, () => newId(1_732_563_200_123));
    t.equal(new Set(ids).size, ids.length, "no two ids alike");
    t.ok(
      ids.every((id) => /^[0-9abcdefghjkmnpqrstvwxyz]{26}$/.test(id)),
      "26 characters of the lower-case Crockford alphabet",
    );
    t.equal(new Set(ids.map((id) => id.slice(0, 10))).size, 1, "the first 10 characters are the time");
    const thin: string[] = [];
    for (let pos = 10; pos < 26; pos++) {
      const seen = new Set(ids.map((id) => id[pos]));
      if (seen.size < 32) thin.push(`position ${pos}: ${seen.size} symbols`);
    }
    t.same(thin, [], "each of the 16 random characters spans all 32 symbols");
    t.end();
  },
);

t.test("ids - ids sort by their creation time", (t) => {
  const times = [0, 1, 31, 32, 1_000, 1_732_563_200_123, 1_732_563_200_124, 2 ** 47];
  const ids = times.map((ms) => newId(ms));
  t.same([...ids].sort(), ids, "lexical order is time order");
  t.end();
});
