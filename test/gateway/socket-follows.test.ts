/** The follows of one socket: one held inline, a Map from the second; the same answers either way. */
import t from "tap";
import { SocketFollows, type FollowEntry } from "../../gateway/socket-follows.js";

const entry = (onTopic: boolean): FollowEntry => ({ following: null, onTopic });

t.test("socket follows - none, one, then several: size, get, has and iteration in first-followed order", async (t) => {
  const f = new SocketFollows();
  t.equal(f.size, 0, "a new socket follows nothing");
  t.same([...f], [], "and iterates nothing");
  const a = entry(true);
  f.set("a", a);
  t.equal(f.size, 1, "one follow");
  t.equal(f.get("a"), a, "found by its id");
  t.notOk(f.has("b"), "another id is not followed");
  const a2 = entry(false);
  f.set("a", a2);
  t.equal(f.size, 1, "following the same job again replaces its entry");
  t.equal(f.get("a"), a2, "with the new entry");
  const b = entry(true);
  const c = entry(false);
  f.set("b", b);
  f.set("c", c);
  t.equal(f.size, 3, "three follows");
  t.same([...f.keys()], ["a", "b", "c"], "keys in the order first followed");
  t.same([...f.values()], [a2, b, c], "values in the same order");
  f.delete("b");
  t.same(
    [...f],
    [
      ["a", a2],
      ["c", c],
    ],
    "a deleted follow is gone",
  );
  f.clear();
  t.equal(f.size, 0, "clear leaves nothing");
  t.equal(f.get("a"), undefined, "and finds nothing");
});

t.test("socket follows - deleting the one follow, or an id not followed, leaves the rest as it was", async (t) => {
  const f = new SocketFollows();
  f.set("a", entry(true));
  f.delete("x");
  t.equal(f.size, 1, "an id not followed deletes nothing");
  f.delete("a");
  t.equal(f.size, 0, "the one follow deleted");
  const b = entry(false);
  f.set("b", b);
  t.same([...f], [["b", b]], "a socket follows again after its follow ended");
});
