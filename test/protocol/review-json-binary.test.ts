/**
 * A JSON client never receives a serialized Node Buffer (`{"type":"Buffer","data":[…]}`): bytes at any depth of
 * an event (a ComfyUI node's `images` list, an object of outputs) become `data:` URIs as top-level ones do, also
 * when the event was decoded from MessagePack held in a Buffer (as the gateway decodes what NATS delivers).
 */
import t from "tap";
import { decodeMsgpack, encodeJson, encodeMsgpack } from "../../protocol/index.js";

const uri = (b: Uint8Array) => `data:application/octet-stream;base64,${Buffer.from(b).toString("base64")}`;

t.test("codec - encodeJson writes bytes nested in lists and objects as data: URIs, Buffers included", async (t) => {
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  const ev = {
    type: "output_update",
    job_id: "j",
    attempt: 1,
    value: [png, { nested: [new Uint8Array([9, 8]), Buffer.from("x")] }],
    top: Buffer.from("top"),
  };
  const text = encodeJson(ev);
  t.notMatch(text, /"type":"Buffer"/, "no serialized Buffer");
  t.same(JSON.parse(text), {
    type: "output_update",
    job_id: "j",
    attempt: 1,
    value: [uri(png), { nested: [uri(new Uint8Array([9, 8])), uri(Buffer.from("x"))] }],
    top: uri(Buffer.from("top")),
  });
});

t.test(
  "codec - an event decoded from a Buffer (the gateway's case) becomes JSON with data: URIs at every depth",
  async (t) => {
    const images = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])];
    const stored = Buffer.from(
      encodeMsgpack({ type: "output_update", job_id: "j", attempt: 1, value: images, result: { c: { images } } }),
    );
    const ev = decodeMsgpack(stored) as { value: unknown[] };
    t.ok(Buffer.isBuffer(ev.value[0]), "the decoder gives Buffers for bytes held in a Buffer");
    const json = JSON.parse(encodeJson(ev)) as { value: string[]; result: { c: { images: string[] } } };
    t.same(json.value, images.map(uri), "a list of images: data: URIs");
    t.same(json.result.c.images, images.map(uri), "nested in an object: data: URIs");
    let deep: unknown = Buffer.from([7]);
    for (let i = 0; i < 200; i++) deep = i % 2 ? [deep] : { d: deep };
    t.match(encodeJson({ deep }), /"data:application\/octet-stream;base64,Bw=="/, "200 levels down too");
  },
);
