// Waystation demo page: chat panes over the sandbox's JSON API; a WebSocket says which chat changed.
// Plain JavaScript, no build step, no CDN. Everything shown in a chat is what the bot sent (bot HTML is sanitised
// to Telegram's own small set of tags before it is inserted).
"use strict";

(() => {
  const state = {
    meta: null,
    chats: new Map(), // chat id -> {messages, keyboard}
    panes: [], // {key, el, personas, persona, chat, region, nodes: Map(message id -> {sig, el}), unread: Set}
    loading: new Map(), // chat id -> "busy" | "again"
  };
  window.waystationDemo = state; // for poking around in the browser console

  // ---------------------------------------------------------------------------------------------- helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function bilingual(en, zh) {
    return el("span", {}, en, " ", el("span", { class: "zh", text: zh }));
  }

  async function api(path, body) {
    const options =
      body === undefined
        ? {}
        : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_error) {
      data = null;
    }
    if (!response.ok) throw new Error((data && data.error) || response.statusText);
    return data;
  }

  // Telegram's HTML subset only: anything else is reduced to its text. Links only to http(s) and tg: addresses.
  const ALLOWED = new Set([
    "B", "STRONG", "I", "EM", "U", "INS", "S", "STRIKE", "DEL", "CODE", "PRE", "BLOCKQUOTE", "A", "SPAN",
    "TG-SPOILER", "TG-EMOJI",
  ]);

  function sanitize(html) {
    const doc = new DOMParser().parseFromString(`<!doctype html><body>${html}</body>`, "text/html");
    const out = document.createDocumentFragment();
    for (const node of Array.from(doc.body.childNodes)) out.append(clean(node));
    return out;
  }

  function clean(node) {
    if (node.nodeType === Node.TEXT_NODE) return document.createTextNode(node.textContent);
    if (node.nodeType !== Node.ELEMENT_NODE) return document.createTextNode("");
    const tag = node.tagName;
    let out;
    if (!ALLOWED.has(tag)) {
      out = document.createDocumentFragment();
    } else if (tag === "A") {
      out = document.createElement("a");
      const href = node.getAttribute("href") || "";
      if (/^(https?:|tg:)/i.test(href)) {
        out.href = href;
        out.target = "_blank";
        out.rel = "noopener noreferrer";
      }
    } else if (tag === "TG-SPOILER" || (tag === "SPAN" && node.classList.contains("tg-spoiler"))) {
      out = el("span", { class: "spoiler", title: "Spoiler: click to reveal" });
      out.addEventListener("click", () => out.classList.add("revealed"));
    } else if (tag === "SPAN" || tag === "TG-EMOJI") {
      out = document.createElement("span");
    } else {
      out = document.createElement(tag.toLowerCase());
    }
    for (const child of Array.from(node.childNodes)) out.append(clean(child));
    return out;
  }

  function personaByKey(key) {
    return state.meta.personas.find((p) => p.key === key);
  }

  function chatTitle(chatId, persona) {
    const chat = state.meta.chats[String(chatId)];
    if (!chat) return String(chatId);
    if (chat.type === "group") return `👥 ${chat.title}`;
    return chatId === persona.private_chat ? `🤖 ${state.meta.bot.name}` : chat.title;
  }

  function regionFor(lat, lon) {
    return (
      state.meta.regions.find(
        (r) => lat >= r.bounds.south && lat <= r.bounds.north && lon >= r.bounds.west && lon <= r.bounds.east,
      ) || null
    );
  }

  // ---------------------------------------------------------------------------------------------- the map

  // An equirectangular drawing of a region: station dots and preset places, no tiles. Units: 1/1000 degree.
  function drawMap(region, { pin = null, onPick = null, compact = false } = {}) {
    let b = region.bounds;
    const k = Math.cos((((b.north + b.south) / 2) * Math.PI) / 180);
    if (compact && pin) {
      // A close-up around the pin (about 3 km high), like the thumbnail under a location in Telegram.
      const half = 0.015;
      b = { south: pin.lat - half, north: pin.lat + half, west: pin.lon - (1.5 * half) / k, east: pin.lon + (1.5 * half) / k };
    }
    const width = (b.east - b.west) * k * 1000;
    const height = (b.north - b.south) * 1000;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", compact ? "minimap" : "bigmap");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `Map of ${region.title}`);
    const x = (lon) => (lon - b.west) * k * 1000;
    const y = (lat) => (b.north - lat) * 1000;
    const add = (name, attrs, parent = svg) => {
      const node = document.createElementNS(ns, name);
      for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
      parent.append(node);
      return node;
    };
    add("rect", { x: 0, y: 0, width, height, class: "land" });
    const step = 10; // a grid line every 0.01°
    for (let gx = Math.ceil(b.west * 100) / 100; gx < b.east; gx += step / 1000) {
      add("line", { x1: x(gx), x2: x(gx), y1: 0, y2: height, class: "grid" });
    }
    for (let gy = Math.ceil(b.south * 100) / 100; gy < b.north; gy += step / 1000) {
      add("line", { x1: 0, x2: width, y1: y(gy), y2: y(gy), class: "grid" });
    }
    const r = Math.max(width, height) / (compact ? 60 : 120);
    for (const station of region.stations) {
      const dot = add("circle", { cx: x(station.lon), cy: y(station.lat), r, class: "station" });
      add("title", {}, dot).textContent = `${station.name_en || ""} ${station.name || ""}`.trim();
    }
    if (!compact) {
      for (const place of region.places) {
        const group = add("g", { class: "place" });
        add("rect", { x: x(place.lon) - r, y: y(place.lat) - r, width: 2 * r, height: 2 * r }, group);
        const label = add("text", { x: x(place.lon) + 1.6 * r, y: y(place.lat) + r, "font-size": 3.2 * r }, group);
        label.textContent = place.title;
      }
      const km = 1000 / 111.32; // one kilometre north-south, in map units
      add("line", { x1: 2 * r, x2: 2 * r + km, y1: height - 2 * r, y2: height - 2 * r, class: "scale" });
      add("text", { x: 2 * r, y: height - 3 * r, "font-size": 3 * r, class: "scale-label" }).textContent = "1 km";
    }
    if (pin) {
      const marker = add("g", { class: "pin" });
      add("circle", { cx: x(pin.lon), cy: y(pin.lat), r: r * 1.6 }, marker);
      add("circle", { cx: x(pin.lon), cy: y(pin.lat), r: r * 0.6, class: "pin-core" }, marker);
    }
    if (onPick) {
      svg.classList.add("pickable");
      const toLatLon = (event) => {
        const point = svg.createSVGPoint();
        point.x = event.clientX;
        point.y = event.clientY;
        const local = point.matrixTransform(svg.getScreenCTM().inverse());
        return { lat: b.north - local.y / 1000, lon: b.west + local.x / (k * 1000) };
      };
      svg.addEventListener("click", (event) => {
        const spot = toLatLon(event);
        onPick(Math.round(spot.lat * 1e5) / 1e5, Math.round(spot.lon * 1e5) / 1e5);
      });
      svg.addEventListener("mousemove", (event) => {
        const spot = toLatLon(event);
        svg.dataset.hover = `${spot.lat.toFixed(4)}, ${spot.lon.toFixed(4)}`;
        const hint = svg.parentElement && svg.parentElement.previousElementSibling;
        if (hint) hint.dataset.coords = svg.dataset.hover;
      });
    }
    return svg;
  }

  // ---------------------------------------------------------------------------------------------- panes

  function buildPanes() {
    const root = document.getElementById("panes");
    root.textContent = "";
    const template = document.getElementById("pane-template");
    for (const paneInfo of state.meta.panes) {
      const personas = state.meta.personas.filter((p) => p.pane === paneInfo.key);
      if (!personas.length) continue;
      const node = template.content.firstElementChild.cloneNode(true);
      node.dataset.pane = paneInfo.key;
      const pane = {
        key: paneInfo.key,
        info: paneInfo,
        el: node,
        personas,
        persona: personas[0].key,
        chat: personas[0].chats[0],
        region: state.meta.regions[0].key,
        nodes: new Map(),
        unread: new Set(),
      };
      state.panes.push(pane);
      node.querySelector(".avatar").textContent = paneInfo.icon;
      node.querySelector("h2").append(bilingual(paneInfo.title, paneInfo.title_zh));
      wirePane(pane);
      root.append(node);
      renderHeader(pane);
    }
  }

  function currentPersona(pane) {
    return personaByKey(pane.persona);
  }

  function renderHeader(pane) {
    const persona = currentPersona(pane);
    const line = pane.el.querySelector(".persona-line");
    line.textContent = "";
    if (pane.personas.length > 1) {
      const label = el("label", {}, "Act as ", el("span", { class: "zh", text: "身份" }), " ");
      const select = el("select", { class: "persona-select", "aria-label": "Act as" });
      for (const p of pane.personas) {
        const option = el("option", { value: p.key, text: `${p.name} · ${p.role} ${p.role_zh}` });
        if (p.key === pane.persona) option.selected = true;
        select.append(option);
      }
      select.addEventListener("change", () => {
        pane.persona = select.value;
        const next = currentPersona(pane);
        if (!next.chats.includes(pane.chat)) pane.chat = next.chats[0];
        pane.nodes.clear();
        pane.shown = 0;
        pane.el.querySelector(".messages").textContent = "";
        renderHeader(pane);
        renderPane(pane);
      });
      label.append(select);
      line.append(label);
    } else {
      line.append(`${persona.name} · ${persona.role} `, el("span", { class: "zh", text: persona.role_zh }));
    }
    const tabs = pane.el.querySelector(".tabs");
    tabs.textContent = "";
    tabs.hidden = persona.chats.length < 2;
    for (const chatId of persona.chats) {
      const tab = el("button", {
        type: "button",
        class: `tab${chatId === pane.chat ? " active" : ""}${pane.unread.has(chatId) ? " unread" : ""}`,
        "data-chat": chatId,
        text: chatTitle(chatId, persona),
        onclick: () => {
          pane.chat = chatId;
          pane.unread.delete(chatId);
          pane.nodes.clear();
          pane.shown = 0;
          pane.el.querySelector(".messages").textContent = "";
          renderHeader(pane);
          renderPane(pane);
        },
      });
      tabs.append(tab);
    }
  }

  function wirePane(pane) {
    const node = pane.el;
    const form = node.querySelector(".composer");
    const input = form.querySelector(".text");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value;
      if (!text.trim()) return;
      input.value = "";
      await act(pane, { type: "text", text }, () => {
        input.value = text; // nothing typed is lost when sending fails
      });
    });
    const menu = node.querySelector(".attach-menu");
    node.querySelector(".attach").addEventListener("click", () => {
      menu.hidden = !menu.hidden;
      node.querySelector(".picker").hidden = true;
    });
    menu.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-attach]");
      if (!button) return;
      menu.hidden = true;
      const kind = button.dataset.attach;
      if (kind === "location") openPicker(pane);
      else if (kind === "contact") await act(pane, { type: "contact" });
      else if (kind === "photo") await act(pane, { type: "photo" });
    });
    const file = menu.querySelector("input[type=file]");
    file.addEventListener("change", () => {
      const chosen = file.files && file.files[0];
      file.value = "";
      menu.hidden = true;
      if (!chosen) return;
      const reader = new FileReader();
      reader.onload = () => act(pane, { type: "photo", data: reader.result });
      reader.readAsDataURL(chosen);
    });
    node.querySelector(".picker-close").addEventListener("click", () => {
      node.querySelector(".picker").hidden = true;
    });
  }

  function openPicker(pane) {
    const picker = pane.el.querySelector(".picker");
    pane.el.querySelector(".attach-menu").hidden = true;
    const regions = picker.querySelector(".region-tabs");
    const places = picker.querySelector(".places");
    const map = picker.querySelector(".map");
    const draw = () => {
      const region = state.meta.regions.find((r) => r.key === pane.region) || state.meta.regions[0];
      regions.textContent = "";
      for (const r of state.meta.regions) {
        regions.append(
          el("button", {
            type: "button",
            class: `region${r.key === region.key ? " active" : ""}`,
            text: `${r.title} · ${r.title_zh}`,
            onclick: () => {
              pane.region = r.key;
              draw();
            },
          }),
        );
      }
      places.textContent = "";
      for (const place of region.places) {
        places.append(
          el(
            "button",
            {
              type: "button",
              class: "place-button",
              "data-place": place.key,
              onclick: () => pick(pane, place.lat, place.lon),
            },
            `📍 ${place.title} `,
            el("span", { class: "zh", text: place.title_zh }),
          ),
        );
      }
      map.textContent = "";
      map.append(drawMap(region, { onPick: (lat, lon) => pick(pane, lat, lon) }));
    };
    draw();
    picker.hidden = false;
  }

  async function pick(pane, lat, lon) {
    pane.el.querySelector(".picker").hidden = true;
    await act(pane, { type: "location", lat, lon });
  }

  async function act(pane, action, onFail) {
    const payload = { persona: pane.persona, ...action };
    try {
      const result = await api(`/api/chats/${pane.chat}/actions`, payload);
      if (result && result.url && /^https?:/i.test(result.url)) window.open(result.url, "_blank", "noopener");
      return result;
    } catch (error) {
      showToast(pane, `⚠️ ${error.message}`);
      if (onFail) onFail();
      return null;
    }
  }

  // ---------------------------------------------------------------------------------------------- messages

  function renderPane(pane) {
    const data = state.chats.get(pane.chat);
    const box = pane.el.querySelector(".messages");
    if (!data) return;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const grew = data.messages.length > (pane.shown || 0);
    pane.shown = data.messages.length;
    const persona = currentPersona(pane);
    const seen = new Set();
    let previous = null;
    for (const message of data.messages) {
      seen.add(message.id);
      const sig = JSON.stringify(message) + pane.persona;
      let entry = pane.nodes.get(message.id);
      if (!entry || entry.sig !== sig) {
        const fresh = renderMessage(pane, persona, message);
        if (entry) entry.el.replaceWith(fresh);
        entry = { sig, el: fresh };
        pane.nodes.set(message.id, entry);
      }
      const expected = previous ? previous.nextSibling : box.firstChild;
      if (expected !== entry.el) box.insertBefore(entry.el, expected);
      previous = entry.el;
    }
    for (const [id, entry] of pane.nodes) {
      if (!seen.has(id)) {
        entry.el.remove();
        pane.nodes.delete(id);
      }
    }
    renderKeyboard(pane, data.keyboard);
    if (nearBottom || grew) box.scrollTop = box.scrollHeight;
  }

  function keepAtBottom(pane) {
    // Pictures get their height when they load: stay at the newest message if the reader was there.
    const box = pane.el.querySelector(".messages");
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 400) box.scrollTop = box.scrollHeight;
  }

  function renderMessage(pane, persona, message) {
    const mine = !message.from_bot && message.sender_id === persona.private_chat;
    const side = message.from_bot ? "bot" : mine ? "me" : "other";
    const bubble = el("div", { class: "bubble" });
    const isGroup = state.meta.chats[String(pane.chat)]?.type === "group";
    if (isGroup && !mine) bubble.append(el("div", { class: "sender", text: message.sender }));
    if (message.photo) {
      bubble.append(
        message.photo.url
          ? el("img", {
              class: "photo",
              src: message.photo.url,
              alt: "photo",
              width: message.photo.width,
              height: message.photo.height,
              onload: () => keepAtBottom(pane),
            })
          : el("div", { class: "photo placeholder", text: "🖼 photo" }),
      );
    }
    if (message.venue) {
      bubble.append(
        el(
          "div",
          { class: "venue" },
          el("div", { class: "venue-title", text: `📍 ${message.venue.title}` }),
          el("div", { class: "venue-address", text: message.venue.address }),
        ),
      );
    }
    if (message.location) {
      const region = regionFor(message.location.lat, message.location.lon);
      if (region) bubble.append(drawMap(region, { pin: message.location, compact: true }));
      bubble.append(
        el("div", {
          class: "coords",
          text: `${message.venue ? "" : "📍 "}${message.location.lat.toFixed(5)}, ${message.location.lon.toFixed(5)}`,
        }),
      );
    }
    if (message.contact) {
      bubble.append(el("div", { class: "contact", text: `👤 ${message.contact.name} · ${message.contact.phone}` }));
    }
    if (message.document) {
      bubble.append(el("a", { class: "document", href: message.document.url, text: `📄 ${message.document.name}` }));
    }
    if (message.sticker) bubble.append(el("div", { class: "sticker", text: message.sticker }));
    if (message.voice) bubble.append(el("div", { class: "voice", text: `🎤 ${message.voice.duration}s` }));
    if (message.html) {
      const body = el("div", { class: "body" });
      body.append(sanitize(message.html));
      bubble.append(body);
    }
    bubble.append(el("div", { class: "meta", text: `${message.edited ? "edited " : ""}${message.time}` }));
    const wrapper = el(
      "div",
      { class: `msg ${side}`, "data-id": message.id, "data-kind": message.kind },
      bubble,
    );
    if (message.buttons && message.buttons.length) {
      const keyboard = el("div", { class: "inline-kb" });
      message.buttons.forEach((row, rowIndex) => {
        const line = el("div", { class: "kb-row" });
        row.forEach((button, colIndex) => {
          line.append(
            el("button", {
              type: "button",
              class: `kb-button ${button.type}`,
              text: button.text + (button.type === "url" ? " ↗" : ""),
              onclick: () => act(pane, { type: "inline", message_id: message.id, row: rowIndex, col: colIndex }),
            }),
          );
        });
        keyboard.append(line);
      });
      wrapper.append(keyboard);
    }
    return wrapper;
  }

  function renderKeyboard(pane, keyboard) {
    const box = pane.el.querySelector(".reply-keyboard");
    const input = pane.el.querySelector(".composer .text");
    input.placeholder = (keyboard && keyboard.placeholder) || "Message · 消息";
    const sig = JSON.stringify(keyboard);
    if (box.dataset.sig === sig) return;
    box.dataset.sig = sig;
    box.textContent = "";
    box.hidden = !keyboard;
    if (!keyboard) return;
    for (const row of keyboard.rows) {
      const line = el("div", { class: "kb-row" });
      for (const button of row) {
        const extra = button.request_location ? " request-location" : button.request_contact ? " request-contact" : "";
        line.append(
          el("button", {
            type: "button",
            class: `reply-button${extra}`,
            text: button.text,
            onclick: () => {
              if (button.request_location) openPicker(pane);
              else act(pane, { type: "reply_button", text: button.text });
            },
          }),
        );
      }
      box.append(line);
    }
  }

  function showToast(pane, text) {
    const toast = pane.el.querySelector(".toast");
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => {
      toast.hidden = true;
    }, 3500);
  }

  function showAlert(text) {
    const dialog = document.getElementById("alert");
    document.getElementById("alert-text").textContent = text;
    dialog.hidden = false;
    document.getElementById("alert-ok").focus();
  }

  // ---------------------------------------------------------------------------------------------- live updates

  async function refreshChat(chatId) {
    const status = state.loading.get(chatId);
    if (status) {
      state.loading.set(chatId, "again");
      return;
    }
    state.loading.set(chatId, "busy");
    try {
      do {
        state.loading.set(chatId, "busy");
        const before = state.chats.get(chatId);
        const data = await api(`/api/chats/${chatId}`);
        state.chats.set(chatId, data);
        const changed = before && JSON.stringify(before.messages) !== JSON.stringify(data.messages);
        for (const pane of state.panes) {
          if (pane.chat === chatId) renderPane(pane);
          else if (changed && currentPersona(pane).chats.includes(chatId) && !pane.unread.has(chatId)) {
            pane.unread.add(chatId);
            renderHeader(pane);
          }
        }
      } while (state.loading.get(chatId) === "again");
    } catch (error) {
      console.warn("refresh failed", chatId, error);
    } finally {
      state.loading.delete(chatId);
    }
  }

  function allChatIds() {
    return Object.values(state.meta.chats).map((c) => c.id);
  }

  function setClock(clock, ran) {
    const label = document.getElementById("clock-label");
    const shift = clock.offset_minutes ? ` (+${formatMinutes(clock.offset_minutes)})` : "";
    label.textContent = `${clock.label}${shift}`;
    if (ran !== undefined) {
      document.getElementById("clock-note").textContent = ran.length
        ? `ran: ${ran.join(", ")}`
        : "no scheduled job was due · 没有到期的任务";
    }
  }

  function formatMinutes(minutes) {
    const hours = Math.floor(minutes / 60);
    const rest = minutes % 60;
    return hours ? `${hours} h${rest ? ` ${rest} min` : ""}` : `${rest} min`;
  }

  function connect() {
    const dot = document.getElementById("connection");
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    socket.addEventListener("open", () => {
      dot.classList.add("live");
      allChatIds().forEach(refreshChat); // catch up on anything missed while disconnected
    });
    socket.addEventListener("close", () => {
      dot.classList.remove("live");
      setTimeout(connect, 1000);
    });
    socket.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.type === "chat") refreshChat(data.chat_id);
      else if (data.type === "clock" || data.type === "hello") setClock(data.clock, data.ran);
      else if (data.type === "toast") {
        if (data.alert) showAlert(data.text);
        else {
          for (const pane of state.panes) {
            if (pane.persona === data.persona) showToast(pane, data.text);
          }
        }
      }
    });
  }

  function setupControls() {
    setClock(state.meta.clock);
    document.querySelectorAll("[data-clock]").forEach((button) => {
      button.addEventListener("click", async () => {
        try {
          const result = await api("/api/clock", { minutes: Number(button.dataset.clock) });
          setClock(result.clock, result.ran);
        } catch (error) {
          showAlert(error.message);
        }
      });
    });
    document.querySelector("[data-clock-reset]").addEventListener("click", async () => {
      const result = await api("/api/clock", { reset: true });
      setClock(result.clock);
      document.getElementById("clock-note").textContent = "";
    });
    const weather = document.getElementById("weather");
    weather.disabled = !state.meta.weather.available;
    weather.title = state.meta.weather.available ? "Fake a −25 °C night for every area" : state.meta.weather.reason;
    document.getElementById("weather-note").textContent = state.meta.weather.available
      ? ""
      : "not available · 暂不可用";
    weather.addEventListener("click", async () => {
      try {
        await api("/api/weather", {});
      } catch (error) {
        showAlert(error.message);
      }
    });
    document.getElementById("alert-ok").addEventListener("click", () => {
      document.getElementById("alert").hidden = true;
    });
  }

  async function init() {
    try {
      state.meta = await api("/api/state");
    } catch (error) {
      document.getElementById("panes").textContent = `The demo server does not answer: ${error.message}`;
      return;
    }
    buildPanes();
    setupControls();
    await Promise.all(allChatIds().map(refreshChat));
    connect();
    document.body.dataset.ready = "true";
  }

  init();
})();
