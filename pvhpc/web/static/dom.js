// What every part of the page does with the document: find an element, make one, fill a choice, tell the
// person at the page (read out by screen readers) and show an error that concerns the whole page.

export const $ = (id) => document.getElementById(id);

export function element(tag, text, attributes = {}) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = text;
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

// values: [value, label] pairs; chosen: the value selected.
export function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map(([value, label]) => {
    const option = element("option", label, { value });
    if (value === chosen) option.selected = true;
    return option;
  }));
}

export function announce(text) {
  // Clear first so that the same words said twice are read twice.
  const region = $("status");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function showPageError(text) {
  const p = $("page-error");
  p.textContent = text;
  p.hidden = !text;
}

// The answer of an API request, or null once the page's error line says why there is none.
export async function answerOrPageError(request) {
  try {
    return await request;
  } catch (error) {
    showPageError(error.message);
    return null;
  }
}
