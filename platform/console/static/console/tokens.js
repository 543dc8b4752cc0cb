// Token inspector: hover, focus or tap a response token to see every client's share of it.
// The data comes from the page (json_script "inspector-data"); nothing is fetched.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("inspector-data").textContent);
  const byId = (id) => document.getElementById(id);
  const pct = (x) => (x * 100).toFixed(1) + "%";

  function bar(clientId, share, isTop) {
    const li = document.createElement("li");
    if (isTop) li.className = "top";
    const label = document.createElement("span");
    label.className = "label";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = data.colours[clientId];
    label.append(swatch, document.createTextNode(clientId));
    const track = document.createElement("span");
    track.className = "bar wide";
    const fill = document.createElement("span");
    fill.style.width = (share * 100).toFixed(1) + "%";
    fill.style.background = data.colours[clientId];
    track.append(fill);
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = pct(share);
    li.append(label, track, num);
    return li;
  }

  function show(span) {
    const pos = Number(span.dataset.pos);
    const token = data.tokens[pos];
    document.querySelectorAll(".tok.active").forEach((el) => el.classList.remove("active"));
    span.classList.add("active");
    byId("inspector-empty").hidden = true;
    byId("inspector-body").hidden = false;
    byId("insp-pos").textContent = "#" + pos;
    byId("insp-text").textContent = JSON.stringify(token.text);
    byId("insp-top").textContent = token.top;
    byId("insp-share").textContent = pct(token.shares[data.clients.indexOf(token.top)]);
    const order = data.clients.map((c, k) => [c, token.shares[k]]).sort((a, b) => b[1] - a[1]);
    byId("insp-bars").replaceChildren(...order.map(([c, s]) => bar(c, s, c === token.top)));
  }

  document.querySelectorAll("#tokens .tok").forEach((span) => {
    span.addEventListener("mouseenter", () => show(span));
    span.addEventListener("focus", () => show(span));
    span.addEventListener("click", () => show(span));
  });
})();
