/* cloudmgr portal: image uploads from the browser, with a progress bar.
 *
 * The create form is posted with fetch (Accept: application/json): the image is recorded and the
 * answer says where to PUT its data. The file is then the body of that PUT (XMLHttpRequest, for
 * upload progress events), streamed to the image store; nothing is held in memory on the server.
 * A refusal (the inspector, the quota) comes back as {"error": "..."} and is shown on the page.
 */
(function () {
  "use strict";

  function showError(message) {
    var box = document.getElementById("image-error");
    if (!box) return;
    box.textContent = message;
    box.classList.remove("d-none");
  }

  function clearError() {
    var box = document.getElementById("image-error");
    if (box) box.classList.add("d-none");
  }

  function setProgress(fraction) {
    var wrap = document.getElementById("upload-progress");
    if (!wrap) return;
    var pct = Math.floor(fraction * 100);
    wrap.classList.remove("d-none");
    wrap.setAttribute("aria-valuenow", String(pct));
    var bar = wrap.querySelector(".progress-bar");
    bar.style.width = pct + "%";
    bar.textContent = pct + "%";
  }

  function errorOf(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error) return typeof body.error === "string" ? body.error : body.error.message;
    } catch (e) { /* not JSON */ }
    return "The upload failed (" + xhr.status + " " + xhr.statusText + ").";
  }

  function putFile(url, file, csrf) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) setProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 204) { setProgress(1); resolve(); } else { reject(new Error(errorOf(xhr))); }
      });
      xhr.addEventListener("error", function () { reject(new Error("The connection was lost during the upload.")); });
      setProgress(0);
      xhr.send(file);
    });
  }

  function busy(form, on) {
    form.querySelectorAll("button, input, select").forEach(function (el) { el.disabled = on; });
  }

  // The create page: choose the source, then create and upload.
  var create = document.getElementById("image-create-form");
  if (create) {
    var fileField = document.getElementById("file-field");
    var urlField = document.getElementById("url-field");
    var sourceOf = function () {
      var checked = create.querySelector("input[name=source]:checked");
      return checked ? checked.value : "file";
    };
    var showSource = function () {
      var file = sourceOf() === "file";
      fileField.classList.toggle("d-none", !file);
      urlField.classList.toggle("d-none", file);
    };
    create.querySelectorAll("input[name=source]").forEach(function (el) { el.addEventListener("change", showSource); });
    showSource();

    create.addEventListener("submit", function (event) {
      if (sourceOf() !== "file") return; // a URL import is a plain form post
      event.preventDefault();
      clearError();
      var file = document.getElementById("image-file").files[0];
      if (!file) { showError("Choose a file to upload."); return; }
      var csrf = create.dataset.csrf;
      var data = new FormData(create);
      busy(create, true);
      fetch(create.action, {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": csrf },
      })
        .then(function (response) {
          return response.json().then(function (body) {
            if (!response.ok) throw new Error(body.error || "The image could not be created.");
            return body;
          });
        })
        .then(function (created) {
          return putFile(created.upload_url, file, csrf).then(
            function () { window.location.assign(created.detail_url); },
            function (error) {
              showError(error.message + " The image is recorded without data: try another file from its page.");
              var link = document.createElement("a");
              link.href = created.detail_url;
              link.textContent = " Open the image.";
              document.getElementById("image-error").appendChild(link);
            }
          );
        })
        .catch(function (error) { showError(error.message); })
        .finally(function () { busy(create, false); });
    });
  }

  // The image page of a queued image: upload its data.
  var upload = document.getElementById("image-upload-form");
  if (upload) {
    upload.addEventListener("submit", function (event) {
      event.preventDefault();
      clearError();
      var file = document.getElementById("image-file").files[0];
      if (!file) { showError("Choose a file to upload."); return; }
      busy(upload, true);
      putFile(upload.dataset.uploadUrl, file, upload.dataset.csrf)
        .then(function () { window.location.assign(upload.dataset.doneUrl); })
        .catch(function (error) { showError(error.message); })
        .finally(function () { busy(upload, false); });
    });
  }
})();
