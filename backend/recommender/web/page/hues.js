// Each class of the query gets its own clearly different hue, in order of confidence; the
// chips of the results reuse it, so a shared class has the same colour as its box.

const PALETTE = [205, 22, 145, 330, 48, 265, 178, 0, 95, 295, 120, 235];
const classHues = new Map();

export function hue(name) {
  if (!classHues.has(name)) {
    const used = classHues.size;
    classHues.set(name, used < PALETTE.length ? PALETTE[used] : (used * 137.508) % 360);
  }
  return classHues.get(name);
}

// A new query or search hands out the palette again, first colour to its first class.
export function resetHues(names) {
  classHues.clear();
  for (const name of names) hue(name);
}
