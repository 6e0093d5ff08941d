// The launch form's last choices, remembered in this browser (localStorage) when a launch was accepted: the
// application and its version, partition, GPUs, walltime, nodes and ranks, account and QoS. Not the data file or
// a saved state: those are one session's. What the page offers now decides: a remembered choice that is no longer
// offered (an application, a version, a partition taken away) is dropped quietly, never sent.

const MEMORY_KEY = "pvhpc.launch-form";
const REMEMBERED = ["application", "version", "partition", "gpus", "walltime", "nodes", "ranks", "account", "qos"];

export function rememberChoices(request) {
  const kept = {};
  for (const field of REMEMBERED) if (request[field] !== undefined) kept[field] = request[field];
  try {
    localStorage.setItem(MEMORY_KEY, JSON.stringify(kept));
  } catch (error) {
    // Storage full or refused (a private window): the form simply starts from the defaults next time.
  }
}

// The remembered choices, or null; anything unreadable counts as nothing remembered.
export function rememberedChoices() {
  try {
    const kept = JSON.parse(localStorage.getItem(MEMORY_KEY) || "null");
    return kept && typeof kept === "object" && typeof kept.application === "string" ? kept : null;
  } catch (error) {
    return null;
  }
}

// Sets a <select> to value only where it offers it; says whether it did.
export function chooseIfOffered(select, value) {
  if (value === undefined || value === null || ![...select.options].some((o) => o.value === String(value))) {
    return false;
  }
  select.value = String(value);
  return true;
}
